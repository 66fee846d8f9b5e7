"""Reference parity: run our LRM on a fixture made with the official VFusion3D code.

A fixture (see the shared fixtures README) is a safetensors file whose metadata holds the
reference configs (``generator_config``, ``encoder_config``, ``grid_size``, ``render_size``);
``model.*`` tensors are the reference state dict under its own key names, ``in.*`` the inputs
and ``out.*`` the reference outputs. Works for any configuration of the architecture.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from orbitmesh.errors import InputError

TOLERANCE = 1e-4


def fixture_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of a parity fixture; a clear error when the file is missing or unreadable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"fixture not found: {path}", fix="check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as exc:
        raise InputError(f"{path} is not a readable safetensors file: {exc}", fix="pass a parity fixture") from exc


def load_fixture(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a parity fixture."""
    from safetensors.torch import load_file

    meta = fixture_metadata(path)
    return load_file(str(path)), meta


def model_from_fixture(tensors: dict[str, torch.Tensor], meta: dict[str, str]):
    """Our LRM built from the fixture's config, with its ``model.*`` weights loaded by reference name."""
    from orbitmesh.models.lrm.config import LRMConfig
    from orbitmesh.models.lrm.loading import load_into

    if "generator_config" not in meta:
        raise InputError("the fixture has no generator_config in its metadata", fix="pass an LRM parity fixture")
    config = LRMConfig.from_reference(json.loads(meta["generator_config"]),
                                      json.loads(meta.get("encoder_config", "{}")) or None)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    return load_into(config, weights, dtype=torch.float32, device="cpu")


def compute_outputs(model, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, torch.Tensor]:
    """Our outputs for every ``out.*`` the fixture can hold, from its ``in.*`` inputs."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        planes = model(tensors["in.image"], tensors.get("in.source_camera"))
        out["out.planes"] = planes
        if "in.points" in tensors:
            pts = model.query_points(planes, tensors["in.points"])
            out["out.points_rgb"], out["out.points_sigma"] = pts["rgb"], pts["sigma"]
        if "grid_size" in meta:
            grid = model.query_grid(planes, int(meta["grid_size"]))
            out["out.grid_rgb"], out["out.grid_sigma"] = grid["rgb"], grid["sigma"]
        if "in.render_cameras" in tensors and "render_size" in meta:
            views = model.render(planes, tensors["in.render_cameras"], int(meta["render_size"]), deterministic=True)
            out.update({f"out.{k}": v for k, v in views.items()})
    return out


def run_fixture(path: str | os.PathLike) -> dict[str, float]:
    """Max abs error of our output per ``out.*`` tensor of the fixture (missing outputs: inf)."""
    tensors, meta = load_fixture(path)
    model = model_from_fixture(tensors, meta)
    return output_errors(tensors, compute_outputs(model, tensors, meta))


def output_errors(tensors: dict, ours: dict) -> dict[str, float]:
    """{out.name: max abs error of ``ours`` against the fixture's tensor} (missing or mis-shaped: inf)."""
    errors = {}
    for name in sorted(k for k in tensors if k.startswith("out.")):
        ref, mine = tensors[name], ours.get(name)
        if mine is None or tuple(mine.shape) != tuple(ref.shape):
            errors[name] = float("inf")
        else:
            errors[name] = float((mine.float() - ref.float()).abs().max())
    return errors
