"""Reconstruction quality of an LRM on procedural objects: volumetric IoU, Chamfer-L1, novel-view PSNR.

Used by ``orbitmesh bench quality`` and by the training loop's validation. Conventions:
- IoU on a ``grid``^3 grid of voxel centres over the world box [-1, 1]^3: predicted inside =
  density > the model's mesh threshold (points outside the model's box count as empty);
  ground truth inside = SDF < 0.
- Chamfer-L1: marching-cubes surfaces of both fields on that grid, ``surface_points`` samples
  each (area-weighted), mean of the two mean nearest-neighbour distances (world units).
- PSNR: ``views`` novel views (azimuth 22.5 + 360 k / views, elevation alternating 20/-5 degrees,
  distance 1.5) rendered by the model at ``view_size`` vs the sphere tracer's, on white.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from orbitmesh.data.procedural import ProceduralConfig, make_sample
from orbitmesh.data.render import SOURCE_INTRINSICS, orbit_camera, render_view
from orbitmesh.data.sdf import Shape, grid_points
from orbitmesh.models.lrm.camera import render_cameras as lrm_render_cameras


@dataclass
class ObjectScore:
    seed: int
    iou: float
    chamfer: float
    psnr: float
    input_image: np.ndarray  # (S, S, 3) uint8
    pred_view: np.ndarray  # (H, W, 3) uint8, first novel view
    true_view: np.ndarray  # (H, W, 3) uint8


def novel_cameras(count: int = 8, distance: float = 1.5) -> list[torch.Tensor]:
    return [orbit_camera(22.5 + 360.0 * k / count, 20.0 if k % 2 == 0 else -5.0, distance) for k in range(count)]


def render_cameras(c2ws: list[torch.Tensor]) -> torch.Tensor:
    """(M, 3, 4) -> (1, M, 25) LRM render cameras with the source intrinsics."""
    return lrm_render_cameras(torch.stack(c2ws), focal=SOURCE_INTRINSICS[0])[None]


def threshold_of(model) -> float:
    t = model.config.mesh_threshold
    return 10.0 if t is None else float(t)


@torch.no_grad()
def predicted_density(model, planes: torch.Tensor, points: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """(P, 3) world points -> (P,) density; zero outside the model's box."""
    lo, hi = model.config.bbox_min, model.config.bbox_max
    out = torch.zeros(points.shape[0])
    for i in range(0, points.shape[0], chunk):
        p = points[i:i + chunk]
        sigma = model.query_points(planes, p[None].to(planes.device))["sigma"][0, :, 0].float().cpu()
        inside = ((p >= lo) & (p <= hi)).all(-1)
        out[i:i + chunk] = torch.where(inside, sigma, torch.zeros_like(sigma))
    return out


def volumetric_iou(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Boolean tensors of the same shape -> IoU (1.0 when both are empty)."""
    union = (pred | true).sum().item()
    return 1.0 if union == 0 else (pred & true).sum().item() / union


def _surface_samples(values: np.ndarray, level: float, count: int, rng: np.random.Generator,
                     lo: float, hi: float) -> np.ndarray | None:
    """Area-weighted samples (count, 3) of the ``level`` iso-surface of a grid over [lo, hi]^3 (voxel centres)."""
    from skimage.measure import marching_cubes

    if not (values.min() < level < values.max()):
        return None
    res = values.shape[0]
    step = (hi - lo) / res
    verts, faces, _, _ = marching_cubes(values, level=level, spacing=(step, step, step))
    verts = verts + lo + 0.5 * step
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        return None
    idx = rng.choice(len(faces), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    return (tri[idx] * w[:, :, None]).sum(1)


def chamfer_l1(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Symmetric mean nearest-neighbour distance; 1.0 (half the box) when a surface is missing."""
    from scipy.spatial import cKDTree

    if a is None or b is None:
        return 1.0
    return 0.5 * (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def psnr(pred: torch.Tensor, true: torch.Tensor) -> float:
    mse = torch.mean((pred.float().clamp(0, 1) - true.float()) ** 2).item()
    return 99.0 if mse <= 1e-10 else 10.0 * math.log10(1.0 / mse)


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def reconstruct(model, sample) -> torch.Tensor:
    """Planes (1, 3, C, H, W) from a procedural sample's input view and its exact source camera."""
    image = sample.input.rgb.permute(2, 0, 1)[None]
    camera = torch.cat([sample.input.c2w.reshape(-1), sample.input.intrinsics])[None]
    return model(image.to(model.device, model.dtype), camera.to(model.device, model.dtype))


@torch.no_grad()
def score_object(model, seed: int, *, grid: int = 64, views: int = 8, view_size: int = 64,
                 surface_points: int = 10000, data_config: ProceduralConfig | None = None,
                 threshold: float | None = None) -> ObjectScore:
    """Reconstruct the procedural object ``seed`` from its input view and score it."""
    config = data_config or ProceduralConfig(input_size=model.config.input_size, views=0, include_input_view=False)
    sample = make_sample(seed, config)
    shape: Shape = sample.shape
    device = model.device
    planes = reconstruct(model, sample)
    level = threshold_of(model) if threshold is None else threshold

    pts = grid_points(grid)
    dens = predicted_density(model, planes, pts)
    sdf = shape.sdf(pts)
    iou = volumetric_iou(dens > level, sdf < 0)
    rng = np.random.default_rng(seed)
    pred_surf = _surface_samples(dens.reshape(grid, grid, grid).numpy(), level, surface_points, rng, -1.0, 1.0)
    true_surf = _surface_samples(sdf.reshape(grid, grid, grid).numpy(), 0.0, surface_points, rng, -1.0, 1.0)
    chamfer = chamfer_l1(pred_surf, true_surf)

    cams = novel_cameras(views)
    rendered = model.render(planes, render_cameras(cams).to(device), view_size, deterministic=True)["images_rgb"]
    rendered = rendered[0].float().permute(0, 2, 3, 1).cpu()  # (M, H, W, 3)
    truths = [render_view(shape, c, view_size).rgb for c in cams]
    score = float(np.mean([psnr(rendered[i], truths[i]) for i in range(views)]))
    return ObjectScore(seed, iou, float(chamfer), score, _u8(sample.input.rgb), _u8(rendered[0]), _u8(truths[0]))


def contact_sheet(scores: list[ObjectScore], cell: int = 128) -> "Image.Image":  # noqa: F821
    """One row per object: input | prediction | ground truth (first novel view), ``cell`` px each."""
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", (3 * cell, max(1, len(scores)) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for r, s in enumerate(scores):
        for c, img in enumerate((s.input_image, s.pred_view, s.true_view)):
            sheet.paste(Image.fromarray(img).resize((cell, cell), Image.Resampling.BICUBIC), (c * cell, r * cell))
        draw.text((cell + 3, r * cell + 2), f"{s.seed} IoU {s.iou:.2f} {s.psnr:.1f}dB", fill=(0, 0, 0))
    return sheet
