"""Reconstruction quality on held-out procedural objects: IoU, Chamfer-L1, novel-view PSNR.

``orbitmesh bench quality [--model M] [--count N] [--seed S] [--json]``: objects S .. S+N-1 (training
uses seeds below 1,000,000, so S >= 1,000,000 is always held out); writes a contact sheet PNG
(input | prediction | ground truth, first novel view) next to the table.
"""

from __future__ import annotations

import time
from pathlib import Path

from orbitmesh import atomic
from orbitmesh.errors import InputError

PREVIEW_NAME = "orbitmesh-preview"


def load_model(name: str | None, device: str = "cpu"):
    """Load a model argument (default: the bundled preview model) in float32; returns (model, name)."""
    import torch

    from orbitmesh.models.registry import load_lrm, resolve_lrm_source
    from orbitmesh.settings import load_settings

    settings = load_settings()
    source = resolve_lrm_source(name or PREVIEW_NAME, settings.model_dir)
    model = load_lrm(source, model_dir=settings.model_dir, device=device, dtype=torch.float32, local_files_only=True)
    return model.eval(), source.name


def run(*, model: str | None = None, count: int = 100, seed: int | None = None, grid: int = 64, views: int = 8,
        view_size: int = 64, device: str = "cpu", threads: int | None = None,
        sheet: str | Path = "orbitmesh-output/quality-contact-sheet.png") -> dict:
    """Score ``model`` (default: the bundled preview model) on ``count`` procedural objects from ``seed``.

    ``seed`` defaults to the first held-out seed (training seeds are below it); ``grid``: IoU/Chamfer
    grid resolution over [-1, 1]^3; ``views`` novel views of ``view_size`` pixels per object for PSNR;
    ``threads``: torch CPU threads; ``sheet``: the contact sheet PNG (at most 16 rows).
    """
    import numpy as np
    import torch

    from orbitmesh.data.procedural import HELD_OUT_SEED_START
    from orbitmesh.device import resolve_device
    from orbitmesh.training.evaluate import contact_sheet, score_object

    seed = HELD_OUT_SEED_START if seed is None else seed
    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}", fix="e.g. --count 100")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}", fix=f"e.g. --seed {HELD_OUT_SEED_START}")
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    lrm, name = load_model(model, device)
    start = time.time()
    scores = [score_object(lrm, seed + i, grid=grid, views=views, view_size=view_size) for i in range(count)]
    seconds = time.time() - start
    sheet = Path(sheet)
    with atomic.atomic_path(sheet) as tmp:
        contact_sheet(scores[:16]).save(tmp)
    return {
        "model": name, "count": count, "seed": seed,
        "mean_iou": float(np.mean([s.iou for s in scores])),
        "mean_chamfer": float(np.mean([s.chamfer for s in scores])),
        "mean_psnr": float(np.mean([s.psnr for s in scores])),
        "seconds": round(seconds, 2), "seconds_per_object": round(seconds / count, 3),
        "grid": grid, "held_out": seed >= HELD_OUT_SEED_START, "threshold": float(lrm.config.mesh_threshold or 10.0),
        "device": device, "contact_sheet": str(sheet),
    }


def format_table(result: dict) -> str:
    lines = [f"quality of {result['model']} on {result['count']} procedural objects from seed {result['seed']}"
             + ("" if result["held_out"] else " (NOT held out: training seeds)"),
             f"{'mean IoU (' + str(result['grid']) + '^3 over [-1,1]^3)':<32} {result['mean_iou']:.3f}",
             f"{'mean Chamfer-L1':<32} {result['mean_chamfer']:.4f}",
             f"{'mean novel-view PSNR (dB)':<32} {result['mean_psnr']:.2f}",
             f"{'seconds (per object)':<32} {result['seconds']:.1f} ({result['seconds_per_object']:.2f})",
             f"{'device':<32} {result['device']}",
             f"contact sheet: {result['contact_sheet']}"]
    return "\n".join(lines)
