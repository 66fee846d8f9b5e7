"""Camera alignment: put the orbit frames' cameras in the reconstruction's frame.

Start from the nominal SV3D camera (:class:`orbitmesh.quality.cameras.OrbitAlignment`), then
maximise the mean silhouette IoU between the reconstructed mesh, rasterised from each frame's
camera, and the frame's foreground mask: a coarse scan of the azimuth offset (both orbit
directions), then a pattern search over azimuth offset, elevation, field of view and radius
(steps halve when no move helps). Silhouettes are compared at ``size`` pixels, all frames in
one batched rasterisation (:func:`orbitmesh.quality.raster.silhouettes`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from orbitmesh.errors import InputError
from orbitmesh.progress import ProgressCallback, null_progress
from orbitmesh.quality.cameras import OrbitAlignment
from orbitmesh.quality.raster import silhouettes

STAGE = "align"


@dataclass
class AlignFrame:
    """A frame's nominal angles and its foreground mask (H, W) in [0, 1] (None: missing)."""

    mask: np.ndarray | None
    azimuth_deg: float
    elevation_deg: float
    name: str = "frame"


@dataclass
class AlignConfig:
    size: int = 96  # silhouette resolution
    max_faces: int = 6000  # the mesh is decimated to this many faces for the search
    coarse_range_deg: float = 30.0
    coarse_step_deg: float = 5.0
    try_reverse: bool = True
    reverse_margin: float = 0.02  # IoU the reversed orbit must win by
    fit_elevation: bool = True
    fit_fov: bool = True
    fit_radius: bool = True
    max_evaluations: int = 160
    min_step_deg: float = 0.25
    mask_threshold: float = 0.5
    min_mask_fraction: float = 1e-3


@dataclass
class AlignmentResult:
    alignment: OrbitAlignment
    iou_before: float
    iou_after: float
    frame_iou: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    used: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"alignment": self.alignment.to_dict(), "iou_before": self.iou_before, "iou_after": self.iou_after,
                "frame_iou": self.frame_iou, "evaluations": self.evaluations, "used": self.used,
                "skipped": self.skipped, "warnings": self.warnings}


def usable_frames(frames: Sequence[AlignFrame], config: AlignConfig) -> tuple[list[AlignFrame], list[str]]:
    keep, notes = [], []
    for fr in frames:
        if fr.mask is None:
            notes.append(f"frame {fr.name} has no foreground mask; skipped")
        elif float((np.asarray(fr.mask) > config.mask_threshold).mean()) < config.min_mask_fraction:
            notes.append(f"frame {fr.name} has an empty foreground; skipped")
        else:
            keep.append(fr)
    for n in notes:
        warnings.warn(n, stacklevel=3)
    return keep, notes


def _masks_at(frames: Sequence[AlignFrame], size: int, threshold: float) -> torch.Tensor:
    out = []
    for fr in frames:
        m = torch.as_tensor(np.asarray(fr.mask, np.float32))[None, None]
        if m.shape[-1] != size or m.shape[-2] != size:
            m = F.interpolate(m, size=(size, size), mode="area")
        out.append(m[0, 0] > threshold)
    return torch.stack(out)


def iou_per_frame(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    inter = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float().clamp(min=1)
    return inter / union


def _reduce_mesh(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    if len(faces) <= max_faces:
        return vertices, faces
    from orbitmesh.mesh.decimate import decimate

    return decimate(np.asarray(vertices, np.float32), np.asarray(faces, np.int64), max_faces)


def align_cameras(vertices: np.ndarray, faces: np.ndarray, frames: Sequence[AlignFrame],
                  init: OrbitAlignment | None = None, config: AlignConfig | None = None,
                  progress: ProgressCallback = null_progress, device: str | torch.device = "cpu") -> AlignmentResult:
    """Find the :class:`OrbitAlignment` whose cameras make the mesh (N, 3) / (M, 3), in the
    reconstruction's frame, best match the frames' masks. Frames with a missing or empty
    foreground are skipped with a warning; with none left this raises InputError."""
    config = config or AlignConfig()
    init = init or OrbitAlignment()
    used, notes = usable_frames(frames, config)
    if not used:
        raise InputError("no orbit frame has a usable foreground mask, so the cameras cannot be aligned",
                         fix="check the orbit frames show the object on a plain white background")
    v, f = _reduce_mesh(np.asarray(vertices, np.float32), np.asarray(faces, np.int64), config.max_faces)
    vt = torch.from_numpy(np.asarray(v, np.float32)).to(device)
    ft = torch.from_numpy(np.asarray(f, np.int64)).to(device)
    target = _masks_at(used, config.size, config.mask_threshold).to(device)
    angles = [(fr.azimuth_deg, fr.elevation_deg) for fr in used]
    cache: dict[tuple, float] = {}

    def score(al: OrbitAlignment) -> float:
        key = (round(al.azimuth_offset_deg, 4), al.elevation_deg if al.elevation_deg is None else
               round(al.elevation_deg, 4), round(al.elevation_offset_deg, 4), round(al.fov_deg, 5),
               round(al.radius, 5), al.direction)
        if key not in cache:
            cams = [al.camera(a, e) for a, e in angles]
            cache[key] = float(iou_per_frame(silhouettes(vt, ft, cams, config.size), target).mean())
            progress(STAGE, min(len(cache), config.max_evaluations), config.max_evaluations,
                     f"silhouette IoU {cache[key]:.4f}")
        return cache[key]

    before = score(init)
    # 1. coarse azimuth scan, both orbit directions
    n = int(round(config.coarse_range_deg / config.coarse_step_deg))
    offsets = [init.azimuth_offset_deg + k * config.coarse_step_deg for k in range(-n, n + 1)]
    best, best_s = init, before
    for direction in ((init.direction, -init.direction) if config.try_reverse else (init.direction,)):
        for off in offsets:
            cand = init.replace(azimuth_offset_deg=off, direction=direction)
            s = score(cand) - (config.reverse_margin if direction != init.direction else 0.0)
            if s > best_s:
                best, best_s = cand, s
    best_s = score(best)
    # 2. pattern search; elevation as an offset so per-frame elevations (sv3d_p) keep their spread
    dims = [("azimuth_offset_deg", 0.5 * config.coarse_step_deg, False)]
    if config.fit_elevation:
        dims.append(("elevation_offset_deg", 2.0, False))
    if config.fit_fov:
        dims.append(("fov_deg", 0.06, True))  # multiplicative steps
    if config.fit_radius:
        dims.append(("radius", 0.08, True))
    steps = {name: s for name, s, _ in dims}
    while len(cache) < config.max_evaluations:
        improved = False
        for name, _, mult in dims:
            for sign in (1.0, -1.0):
                cur = getattr(best, name)
                val = cur * math.exp(sign * steps[name]) if mult else cur + sign * steps[name]
                cand = best.replace(**{name: val})
                s = score(cand)
                if s > best_s + 1e-6:
                    best, best_s, improved = cand, s, True
                    break
        if not improved:
            for name in steps:
                steps[name] *= 0.5
            if steps["azimuth_offset_deg"] < config.min_step_deg:
                break
    cams = [best.camera(a, e) for a, e in angles]
    per = iou_per_frame(silhouettes(vt, ft, cams, config.size), target).cpu().numpy()
    unused = [fr.name for fr in frames if not any(fr is u for u in used)]
    return AlignmentResult(best, before, best_s, {fr.name: round(float(x), 4) for fr, x in zip(used, per)},
                           len(cache), [fr.name for fr in used], unused, notes)
