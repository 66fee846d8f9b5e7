"""What limits a procedural-trained LRM (the preview model by default); prints a table.

    python benchmarks/preview_limits.py                       # 12 held-out + 12 training objects, 6 fits
    python benchmarks/preview_limits.py --model PATH --count 24 --train-seed 5000 --json

Rows (volumetric IoU at 64^3, as `orbitmesh bench quality`):
- held-out: objects at seeds >= 1000000 (never trained on), by part count and single-part kind;
- training pool: objects the model trained on (``--train-seed``, default inside the preview's pool);
- input-view silhouette IoU: the model's rendered opacity from the source camera vs the truth;
- representation bounds: the same planes (or the transformer's 3 x r x r output tokens) optimised
  per object against the true occupancy, decoder frozen: what the triplane + decoder could express
  if the image-to-planes network were perfect.
A large gap between the bounds and held-out IoU, with the training pool not far above held-out,
says the image-to-planes network (its capacity and training samples) is the limit, not the
representation.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from orbitmesh.bench.quality import load_model
from orbitmesh.data.procedural import HELD_OUT_SEED_START, ProceduralConfig, make_sample
from orbitmesh.data.render import SOURCE_INTRINSICS, render_view
from orbitmesh.data.sdf import grid_points
from orbitmesh.training.evaluate import predicted_density, reconstruct, render_cameras, threshold_of, volumetric_iou

GRID = 64


def _iou(model, planes: torch.Tensor, points: torch.Tensor, truth: torch.Tensor) -> float:
    return volumetric_iou(predicted_density(model, planes, points) > threshold_of(model), truth)


def fit_bound(model, planes_of, start: torch.Tensor, points: torch.Tensor, truth: torch.Tensor,
              steps: int = 60, batch: int = 40000) -> float:
    """IoU after optimising ``start`` (planes or tokens; ``planes_of`` maps it to planes) against the
    true occupancy with the decoder frozen: occupancy BCE at the mesh threshold, Adam lr 0.05."""
    level = threshold_of(model)
    x = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, points.shape[0], (batch,), generator=gen)
        raw = model.query_raw(planes_of(x), points[idx][None])["sigma"][0, :, 0]
        loss = F.binary_cross_entropy_with_logits(F.softplus(raw - 1) - level, truth[idx].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return _iou(model, planes_of(x), points, truth)


def transformer_tokens(model, sample) -> torch.Tensor:
    """The transformer's normalised output tokens (1, 3 r^2, D) for ``sample``."""
    seen = {}
    hook = model.transformer.norm.register_forward_hook(lambda m, i, out: seen.setdefault("x", out.detach()))
    try:
        reconstruct(model, sample)
    finally:
        hook.remove()
    return seen["x"]


def run(args) -> dict:
    model, _ = load_model(args.model)
    for p in model.parameters():
        p.requires_grad_(False)
    config = ProceduralConfig(input_size=model.config.input_size, views=0, include_input_view=False)
    points = grid_points(GRID)
    start = time.time()
    held, by_parts, by_kind, silhouettes, plane_fit, token_fit = [], {}, {}, [], [], []
    for i in range(args.count):
        sample = make_sample(HELD_OUT_SEED_START + args.seed + i, config)
        truth = sample.shape.sdf(points) < 0
        planes = reconstruct(model, sample)
        iou = _iou(model, planes, points, truth)
        held.append(iou)
        by_parts.setdefault(len(sample.shape.parts), []).append(iou)
        if len(sample.shape.parts) == 1:
            by_kind.setdefault(sample.shape.parts[0].kind, []).append(iou)
        with torch.no_grad():
            view = render_view(sample.shape, sample.input.c2w, 64, SOURCE_INTRINSICS)
            weight = model.render(planes, render_cameras([sample.input.c2w]), 64, deterministic=True)["images_weight"]
        silhouettes.append(volumetric_iou(weight[0, 0, 0] > 0.5, view.alpha > 0.5))
        if i < args.fits:
            plane_fit.append(fit_bound(model, lambda x: x, planes, points, truth))
            if model.refiner is None:  # with a refiner, tokens alone do not make the planes
                token_fit.append(fit_bound(model, model.transformer.planes_from_tokens,
                                           transformer_tokens(model, sample), points, truth))
    pool = []
    for i in range(args.count):
        sample = make_sample(args.train_seed + i, config)
        pool.append(_iou(model, reconstruct(model, sample), points, sample.shape.sdf(points) < 0))

    def mean(values) -> float | None:
        return round(float(np.mean(values)), 4) if len(values) else None

    return {"model": args.model or "orbitmesh-preview", "count": args.count, "held_out_iou": mean(held),
            "training_pool_iou": mean(pool), "silhouette_iou": mean(silhouettes),
            "plane_fit_iou": mean(plane_fit), "token_fit_iou": mean(token_fit), "fits": args.fits,
            "held_out_by_parts": {str(k): [len(v), mean(v)] for k, v in sorted(by_parts.items())},
            "held_out_single_part_by_kind": {k: [len(v), mean(v)] for k, v in sorted(by_kind.items())},
            "seconds": round(time.time() - start, 1)}


def format_table(r: dict) -> str:
    rows = [("held-out IoU", r["held_out_iou"], f"{r['count']} objects"),
            ("training-pool IoU", r["training_pool_iou"], f"{r['count']} objects it trained on"),
            ("input-view silhouette IoU", r["silhouette_iou"], "rendered opacity > 0.5 vs truth, 64 px"),
            ("bound: planes fitted", r["plane_fit_iou"], f"{r['fits']} objects, decoder frozen"),
            ("bound: tokens fitted", r["token_fit_iou"], f"{r['fits']} objects, deconv + decoder frozen")]
    rows += [(f"held-out, {k} part(s)", v[1], f"{v[0]} objects") for k, v in r["held_out_by_parts"].items()]
    rows += [(f"held-out, single {k}", v[1], f"{v[0]} objects") for k, v in r["held_out_single_part_by_kind"].items()]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'':{width}}  IoU     note", "-" * (width + 40)]
    lines += [f"{name:{width}}  {'-' if v is None else f'{v:.3f}':6}  {note}" for name, v, note in rows]
    lines.append(f"model {r['model']}, {r['seconds']} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model name, folder or weights file (default: the preview model)")
    parser.add_argument("--count", type=int, default=12, help="held-out and training objects each")
    parser.add_argument("--seed", type=int, default=0, help="first held-out seed, after 1000000")
    parser.add_argument("--train-seed", type=int, default=5000, help="first training seed (in the preview's pool)")
    parser.add_argument("--fits", type=int, default=6, help="objects with the representation-bound fits")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result) if args.json else format_table(result))


if __name__ == "__main__":
    main()
