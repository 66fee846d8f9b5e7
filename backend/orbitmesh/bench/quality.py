"""Reconstruction quality on held-out procedural objects: IoU, Chamfer-L1, novel-view PSNR.

``orbitmesh bench quality [--model M] [--count N] [--seed S] [--json]``: objects S .. S+N-1 (training
uses seeds below 1,000,000, so S >= 1,000,000 is always held out); writes a contact sheet PNG
(input | prediction | ground truth, first novel view) next to the table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from orbitmesh import atomic
from orbitmesh.data.procedural import HELD_OUT_SEED_START
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=f"model to evaluate (default: {PREVIEW_NAME}, the bundled preview model)")
    parser.add_argument("--count", type=int, default=100, help="number of procedural objects (default 100)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED_START,
                        help=f"first object seed (default {HELD_OUT_SEED_START}; training seeds are below it)")
    parser.add_argument("--grid", type=int, default=64, help="IoU/Chamfer grid resolution over [-1, 1]^3")
    parser.add_argument("--views", type=int, default=8, help="novel views per object for PSNR")
    parser.add_argument("--view-size", type=int, default=64, help="novel view resolution")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--sheet", default="orbitmesh-output/quality-contact-sheet.png",
                        help="contact sheet PNG path (at most 16 rows)")


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from orbitmesh.device import resolve_device
    from orbitmesh.training.evaluate import contact_sheet, score_object

    if args.count < 1:
        raise InputError(f"--count must be at least 1, got {args.count}", fix="e.g. --count 100")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}", fix=f"e.g. --seed {HELD_OUT_SEED_START}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, name = load_model(args.model, device)
    start = time.time()
    scores = [score_object(model, args.seed + i, grid=args.grid, views=args.views, view_size=args.view_size)
              for i in range(args.count)]
    seconds = time.time() - start
    sheet = Path(args.sheet)
    with atomic.atomic_path(sheet) as tmp:
        contact_sheet(scores[:16]).save(tmp)
    return {
        "model": name, "count": args.count, "seed": args.seed,
        "mean_iou": float(np.mean([s.iou for s in scores])),
        "mean_chamfer": float(np.mean([s.chamfer for s in scores])),
        "mean_psnr": float(np.mean([s.psnr for s in scores])),
        "seconds": round(seconds, 2), "seconds_per_object": round(seconds / args.count, 3),
        "grid": args.grid, "held_out": args.seed >= HELD_OUT_SEED_START, "threshold": float(model.config.mesh_threshold or 10.0),
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
