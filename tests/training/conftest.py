"""Helpers shared by the training and data tests: a small procedural-data configuration and a folder of
renders written as an external renderer would."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def small_procedural():
    """A ProceduralConfig small enough for CPU tests: 32^2 inputs, three 16^2 views."""
    from orbitmesh.data.procedural import ProceduralConfig

    return ProceduralConfig(input_size=32, input_supersample=1, view_size=16, views=3)


def _write_render_folder(root: Path, data, seeds: Sequence[int]) -> None:
    for n, seed in enumerate(seeds):
        folder = root / f"obj{seed}"
        folder.mkdir(parents=True)
        frames = []
        for v in range(data.view_rgb.shape[1]):
            # PNGs carry straight (not white-composited) colour: undo the white background.
            a = data.view_alpha[n, v].numpy()[..., None] / 255.0
            rgb = data.view_rgb[n, v].numpy() / 255.0
            straight = np.where(a > 0, (rgb - (1 - a)) / np.maximum(a, 1e-6), 0.0).clip(0, 1)
            rgba = np.concatenate([straight * 255, a * 255], -1).round().astype(np.uint8)
            Image.fromarray(rgba).save(folder / f"{v:03d}.png")
            fx, fy, cx, cy = data.view_intrinsics[n, v].tolist()
            frames.append({"file": f"{v:03d}.png", "c2w": data.view_c2w[n, v].tolist(), "fx": fx, "fy": fy,
                           "cx": cx, "cy": cy})
        Image.fromarray(data.input_rgb[n].numpy()).save(folder / "input.png")
        (folder / "cameras.json").write_text(json.dumps({"input": "input.png", "frames": frames}))


@pytest.fixture(scope="session")
def write_render_folder() -> Callable[..., None]:
    """write_render_folder(root, data, seeds): the objects of ``data`` (a MultiViewData) as root/obj<seed>/ folders
    of RGBA view PNGs, input.png and cameras.json, the layout folder_dataset reads."""
    return _write_render_folder
