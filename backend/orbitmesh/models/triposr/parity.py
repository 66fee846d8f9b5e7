"""Reference parity: run our TripoSR on a fixture made with the official TripoSR code.

A TripoSR fixture (see the shared fixtures README) is a safetensors file whose metadata holds
``config`` (the model config in the released config.yaml layout, resolved), ``vit_config`` (the
encoder's config.json) and ``grid_size``; ``model.*`` tensors are the reference state dict under
its own key names (transformers-4 ViT names), ``in.*`` the inputs and ``out.*`` the reference
outputs. Works for any configuration of the architecture.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import torch

from orbitmesh.errors import InputError
from orbitmesh.models.lrm.parity import load_fixture, output_errors


def is_fixture(meta: Mapping[str, str]) -> bool:
    """True when the metadata describes a TripoSR fixture (a released-layout ``config`` with tokenizer and renderer)."""
    try:
        config = json.loads(meta.get("config", ""))
    except (TypeError, ValueError):
        return False
    return isinstance(config, dict) and "tokenizer" in config and "renderer" in config and "backbone" in config


def model_from_fixture(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]):
    """Our TripoSR built from the fixture's config and ViT config, with its ``model.*`` weights loaded by name."""
    from orbitmesh.models.triposr.config import TripoSRConfig
    from orbitmesh.models.triposr.loading import load_into

    if not is_fixture(meta):
        raise InputError("the fixture has no TripoSR config in its metadata", fix="pass a TripoSR parity fixture")
    config = TripoSRConfig.from_dict(json.loads(meta["config"]))
    vit_config = json.loads(meta["vit_config"]) if meta.get("vit_config") else None
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    return load_into(config, weights, vit_config=vit_config, dtype=torch.float32, device="cpu")


def compute_outputs(model, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Our outputs for every ``out.*`` a TripoSR fixture can hold, from its ``in.*`` inputs."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        image = tensors["in.image"].permute(0, 3, 1, 2)  # the reference takes (N, H, W, 3)
        planes = model(image)
        out["out.scene_codes"] = planes
        if "in.points" in tensors:
            pts = model.query_points(planes, tensors["in.points"][None])
            out["out.points_density"], out["out.points_color"] = pts["sigma"][0], pts["rgb"][0]
        if "grid_size" in meta:
            grid = model.query_grid(planes, int(meta["grid_size"]))
            out["out.grid_density"], out["out.grid_color"] = grid["sigma"][0, ..., 0], grid["rgb"][0]
        if "in.rays_o" in tensors and "in.rays_d" in tensors:
            views = model.render_rays(planes, tensors["in.rays_o"][None], tensors["in.rays_d"][None])
            out["out.images"] = views["rgb"][0]
    return out


def run_fixture(path: str | os.PathLike) -> dict[str, float]:
    """Max abs error of our output per ``out.*`` tensor of the fixture (missing or mis-shaped outputs: inf)."""
    tensors, meta = load_fixture(path)
    model = model_from_fixture(tensors, meta)
    return output_errors(tensors, compute_outputs(model, tensors, meta))
