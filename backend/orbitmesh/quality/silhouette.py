"""Silhouette-faithful shape: cut a density grid to the input view's mask, and fill what the model lost.

A triplane model's outline drifts from the object's: it spills past the photo's edge in places and
loses thin parts in others. The input mask, seen from a camera we know exactly, says where the object
is. Before meshing, :func:`carve_density`

* carves: every point that projects outside the mask, dilated by ``dilate_fraction`` of the image
  width so mask noise survives, is pulled below the threshold (so nothing projects outside it);
* fills: mask pixels whose ray the model's surface misses get a slab of density along the ray,
  centred on the depth range of the nearest covered pixel: as deep as that range next to the model's
  outline (the rim it eroded, carried out sideways), no deeper than the missed part is wide farther
  out (a lost pole comes back roughly round), and at least ``min_half_cells`` thick so the coarse
  marching cubes keeps it. What the carve and the fill changed, and its neighbours, is then smoothed
  (a 1-cell Gaussian): their pixel-sized steps would otherwise leave sub-cell lips, slits and wedges
  that the coarse-to-fine marching cubes folds and the fast decimation pinches into non-manifold
  edges (which sends it to its slow fallback).

Both are written as a linear ramp in world units (``threshold + slope * signed distance``, taken by
min for the carve and max for the fill), so marching cubes places the new surface on the mask's edge
to a fraction of a cell instead of a voxel staircase. When the model's silhouette and the mask
disagree grossly (IoU under ``min_iou``: a wrong mask, or an object the background removal cut
apart) nothing is changed and a warning says so. Only samples near the mask's edge are visited, so
the cost follows the object's outline more than the grid.

Geometry: the grid is in the pipeline's output frame (:mod:`orbitmesh.pipeline.reconstruct`): (R, R, R)
samples over the box, indexing 'ij' = (x, y, z), samples on the box corners. The source camera sits at
(0, -distance, 0) looking along +y, world up +z (image right = +x, image up = +z), with normalised
focal length ``focal`` and the principal point at the image centre; a point's view depth is y + distance.
A grid slice of constant y therefore maps onto the image by a scale alone, which keeps every step a
batched 2-D lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation, distance_transform_edt, gaussian_filter, maximum_filter

from orbitmesh.errors import InputError
from orbitmesh.mesh.field import Grid, check_field

SLAB_SMOOTH_PX = 1.5  # the fill's slab depths are smoothed over this many neighbouring pixels (coverage pixels)
CHANGE_SMOOTH_CELLS = 1.0  # what the carve and the fill changed is smoothed by a Gaussian of this many cells


@dataclass
class CarveConfig:
    """``dilate_fraction``: the mask grows by this share of the image width before carving (mask noise
    survives); ``ramp_cells``: the new surface's density ramp changes by the threshold's size over this many
    cells (steep enough to hold the edge, gentle enough for marching cubes to place it between samples);
    ``min_iou``: below this agreement between the model's silhouette and the mask, skip; ``fill``: also fill
    mask pixels the model missed, with slabs as deep as the nearest covered pixel's depth range within
    ``grow_cells`` of the model's outline, no deeper than the missed part is wide farther out, and at least
    2x ``min_half_cells`` thick (the coarse-to-fine marching cubes keeps them)."""

    dilate_fraction: float = 0.005
    ramp_cells: float = 2.0
    min_iou: float = 0.5
    fill: bool = True
    grow_cells: float = 3.0
    min_half_cells: float = 1.5


@dataclass
class CarveResult:
    """The carved ``density`` (R, R, R) float32 (the input itself when ``skipped``) and what changed.

    ``iou_before`` / ``iou_after``: the model's silhouette against the mask at the coverage resolution;
    ``removed_fraction`` / ``added_fraction``: inside samples removed / added, as a share of the inside
    samples before; ``filled_pixels``: mask pixels (coverage resolution) the fill reached."""

    density: np.ndarray
    skipped: bool
    iou_before: float
    iou_after: float
    removed_fraction: float = 0.0
    added_fraction: float = 0.0
    filled_pixels: int = 0
    coverage_size: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"skipped": self.skipped, "iou_before": round(self.iou_before, 4),
                "iou_after": round(self.iou_after, 4), "removed_fraction": round(self.removed_fraction, 5),
                "added_fraction": round(self.added_fraction, 5), "filled_pixels": self.filled_pixels,
                "coverage_size": self.coverage_size, "warnings": list(self.warnings)}


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """(S, S) bool -> (S, S) float32 signed distance in pixels, positive inside, zero on the pixel edges
    between inside and outside (a boundary pixel is +-0.5)."""
    mask = np.asarray(mask, bool)
    if mask.all():
        return np.full(mask.shape, float(max(mask.shape)), np.float32)
    if not mask.any():
        return np.full(mask.shape, -float(max(mask.shape)), np.float32)
    inside = distance_transform_edt(mask)
    outside = distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, 0.5 - outside).astype(np.float32)


def _axes(resolution: int, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    return [np.linspace(lo[a], hi[a], resolution) for a in range(3)]


def mask_at(mask: np.ndarray, size: int) -> np.ndarray:
    """(S, S) bool mask sampled at the pixel centres of a ``size`` x ``size`` image (nearest)."""
    s = mask.shape[0]
    if s == size:
        return np.asarray(mask, bool)
    idx = np.minimum(((np.arange(size) + 0.5) * s / size).astype(np.int64), s - 1)
    return np.asarray(mask, bool)[np.ix_(idx, idx)]


def silhouette(density: np.ndarray, threshold: float, bbox, *, distance: float, focal: float, size: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The field's silhouette in the source view at ``size`` x ``size``: covered (size, size) bool (a
    pixel's ray passes a grid sample above ``threshold``, nearest sample per slice), and the world y of
    the first and last such sample along the ray (front, back; NaN where uncovered)."""
    arr, grid = check_field(density, threshold, bbox)
    return _silhouette(arr > threshold, grid, distance, focal, size)


def _silhouette(inside: np.ndarray, grid: Grid, distance: float, focal: float, size: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = inside.shape[0]
    ay = _axes(r, grid.lo, grid.hi)[1]
    centres = (np.arange(size) + 0.5) / size - 0.5  # normalised image coordinate of each pixel centre
    covered = np.zeros((size, size), bool)
    first = np.full((size, size), -1, np.int64)
    last = np.full((size, size), -1, np.int64)
    along_i, along_k = inside.any(axis=2), inside.any(axis=0)  # (Ri, Rj), (Rj, Rk): each slice's extent
    for j in np.flatnonzero(along_k.any(axis=1)):  # the slices holding anything, front to back
        depth = ay[j] + distance
        if depth <= 1e-6:
            continue
        i_has, k_has = np.flatnonzero(along_i[:, j]), np.flatnonzero(along_k[j])
        # column -> x index, row -> z index (image up = +z); only the pixels over the slice's extent
        ii = np.rint((centres * depth / focal - grid.lo[0]) / grid.spacing[0]).astype(np.int64)
        kk = np.rint((-centres * depth / focal - grid.lo[2]) / grid.spacing[2]).astype(np.int64)
        cols = np.flatnonzero((ii >= i_has[0]) & (ii <= i_has[-1]))
        rows = np.flatnonzero((kk >= k_has[0]) & (kk <= k_has[-1]))
        if len(cols) == 0 or len(rows) == 0:
            continue
        c0, c1, r0, r1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1  # contiguous: the maps are monotonic
        hit = inside[:, j, :][np.ix_(ii[c0:c1], kk[r0:r1])].T  # (rows, cols)
        sub = np.s_[r0:r1, c0:c1]
        f = first[sub]
        f[hit & (f < 0)] = j
        last[sub][hit] = j
        covered[sub] |= hit
    front = np.where(covered, ay[np.maximum(first, 0)], np.nan).astype(np.float32)
    back = np.where(covered, ay[np.maximum(last, 0)], np.nan).astype(np.float32)
    return covered, front, back


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _slabs(covered: np.ndarray, front: np.ndarray, back: np.ndarray, mask_c: np.ndarray, *, distance: float,
           focal: float, cell: float, min_half: float, grow: float) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel, the fill's slab along its ray (world units): centred on the nearest covered pixel's
    depth range; as deep as that range within ``grow`` of the model's outline, no deeper than the missed
    part is wide farther out; at least ``min_half``. Returns (centre, half) (C, C) float32."""
    gap, (qy, qx) = distance_transform_edt(~covered, return_indices=True)
    f, b = front[qy, qx], back[qy, qx]
    centre = 0.5 * (f + b)
    half = 0.5 * (b - f) + 0.5 * cell
    px = (centre + distance) / (focal * covered.shape[0])  # one pixel at that depth, world
    width = distance_transform_edt(mask_c) * px  # to the mask's edge
    half = np.where(gap * px <= grow, half, np.minimum(half, width))
    # neighbouring pixels may take their depth from different covered pixels: smooth (normalised within
    # the mask) so the new surface does not come out as a row of spikes
    weight = gaussian_filter(mask_c.astype(np.float32), SLAB_SMOOTH_PX)
    out = []
    for arr in (centre, np.maximum(half, min_half)):
        smooth = gaussian_filter(np.where(mask_c, arr, 0.0).astype(np.float32), SLAB_SMOOTH_PX)
        out.append(np.where(mask_c, smooth / np.maximum(weight, 1e-6), arr).astype(np.float32))
    return out[0], out[1]


def _sample_pixels(image: torch.Tensor, x: np.ndarray, z: np.ndarray, depth: np.ndarray, focal: float) -> np.ndarray:
    """Bilinear samples of a (1, C, S, S) image at the projections of (N,) points (x, z, view depth) ->
    (N,) for one channel, (C, N) for several."""
    g = np.stack([2.0 * focal * x / depth, -2.0 * focal * z / depth], -1).astype(np.float32)  # 2 (u - 0.5)
    out = F.grid_sample(image, torch.from_numpy(g).view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                        align_corners=False)[0, :, 0]
    return (out[0] if out.shape[0] == 1 else out).numpy()


def _sd_lower_bound(sd: torch.Tensor, size: int) -> np.ndarray:
    """(size, size): a lower bound of the (1, 1, S, S) signed distance over each cell of a size x size grid
    (the nearest sample less the cell's size: the distance changes by at most one per pixel)."""
    full = sd[0, 0].numpy()
    idx = np.minimum(((np.arange(size) + 0.5) * full.shape[0] / size).astype(np.int64), full.shape[0] - 1)
    return full[np.ix_(idx, idx)] - full.shape[0] / size


def _bounding_box(occupied: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """The slices of the smallest box holding every True sample of ``occupied``, grown by ``margin``."""
    box = []
    for axis in range(occupied.ndim):
        used = np.flatnonzero(occupied.any(axis=tuple(a for a in range(occupied.ndim) if a != axis)))
        lo, hi = (int(used[0]), int(used[-1])) if len(used) else (0, -1)
        box.append(slice(max(lo - margin, 0), min(hi + margin + 1, occupied.shape[axis])))
    return tuple(box)


def carve_density(density: np.ndarray, threshold: float, bbox, mask: np.ndarray, *, distance: float,
                  focal: float, config: CarveConfig | None = None) -> CarveResult:
    """Carve ``density`` (R, R, R) to ``mask`` (S, S) bool (the source view, row 0 at the top) and fill the
    mask pixels the model missed (see the module docstring for the geometry). Returns a new array; the
    input is not modified.

    Only samples above the threshold are carved (the rest are outside already, and the new surface's
    crossings lie on edges from a kept sample to a carved one, whose ramp values place it), and of those
    only the ones near or outside the mask's edge."""
    config = config or CarveConfig()
    arr, grid = check_field(density, threshold, bbox)
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise InputError(f"the silhouette mask must be square (S, S), got {mask.shape}",
                         fix="pass the preprocessed (square) mask")
    r, s = arr.shape[0], mask.shape[0]
    c = min(s, r)  # coverage resolution: about one pixel per grid cell
    mask_c = mask_at(mask, c)
    inside = arr > threshold
    n_inside = int(inside.sum())
    covered, front, back = _silhouette(inside, grid, distance, focal, c)
    iou_before = _iou(covered, mask_c)
    if not mask.any() or iou_before < config.min_iou:
        why = "the input mask is empty" if not mask.any() else \
            f"the model's silhouette and the input mask disagree (IoU {iou_before:.2f} < {config.min_iou:g})"
        return CarveResult(arr, True, iou_before, iou_before, coverage_size=c,
                           warnings=[f"silhouette carving skipped: {why}; check the background removal "
                                     "(mask.png in the job folder)"])
    cell = float(grid.spacing.max())
    scale = max(abs(float(threshold)), 1e-3)
    slope = scale / (config.ramp_cells * cell)  # density per world unit
    floor = threshold - scale  # carved samples stay finite, well below the threshold
    sd = torch.from_numpy(signed_distance(mask))[None, None]  # (1, 1, S, S) pixels
    ax, ay, az = _axes(r, grid.lo, grid.hi)
    out = arr.copy()

    # carve: every inside sample down to the ramp of the dilated mask's signed distance (world units). Only
    # samples near or outside the mask's edge can be affected (deeper in, the ramp is above any density):
    # those are picked slice by slice on the coverage grid, then carved one by one in float32.
    depth = ay + distance  # per slice
    ahead = depth > 1e-6  # slices at or behind the camera hold nothing of the object
    to_grid = np.where(ahead, 2.0 * focal / np.maximum(depth, 1e-6), 0.0).astype(np.float32)  # 2 (u - 0.5) / x
    to_ramp = (slope * depth / (focal * s)).astype(np.float32)  # density per pixel of signed distance
    dilate_px = config.dilate_fraction * s
    block_px = s / c  # mask pixels per coverage pixel
    sd_c = _sd_lower_bound(sd, c)
    reach = float(arr.max()) - threshold  # the most the ramp may need to take off
    picked = []
    for jj in np.flatnonzero(inside.any(axis=(0, 2))):
        if ahead[jj]:
            safe_px = reach / to_ramp[jj] - dilate_px + block_px + 1.0  # deeper than this in the mask: untouched
            cols = np.clip(np.floor((0.5 + focal * ax / depth[jj]) * c), 0, c - 1).astype(np.int64)
            rows = np.clip(np.floor((0.5 - focal * az / depth[jj]) * c), 0, c - 1).astype(np.int64)
            near = (sd_c < safe_px)[np.ix_(rows, cols)].T & inside[:, jj, :]  # (i, k)
        else:
            near = inside[:, jj, :]
        ii, kk = np.nonzero(near)
        picked.append((ii * r + jj) * r + kk)
    idx = np.concatenate(picked) if picked else np.zeros(0, np.int64)
    i = idx // (r * r)
    j = idx // r - i * r
    k = idx - (i * r + j) * r
    per_sample = to_grid[j]
    g = np.stack([ax.astype(np.float32)[i] * per_sample, -az.astype(np.float32)[k] * per_sample], -1)
    d_px = F.grid_sample(sd, torch.from_numpy(g).view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                         align_corners=False).view(-1).numpy()
    ramp = np.float32(threshold) + (d_px + np.float32(dilate_px)) * to_ramp[j]
    ramp = np.where(ahead[j], np.maximum(ramp, np.float32(floor)), np.float32(floor))
    flat = out.reshape(-1)
    old = flat[idx]
    new = np.minimum(old, ramp)
    flat[idx] = new
    removed = new <= threshold
    inside.reshape(-1)[idx[removed]] = False
    touched = np.zeros(arr.shape, bool)  # samples the carve or the fill changed, smoothed at the end
    touched.reshape(-1)[idx[new < old]] = True

    # fill, slice by slice: every mask pixel the model misses gets a slab along its ray, centred on the depth
    # range of the nearest covered pixel: as deep as that range next to the model's outline (its rim carried
    # out sideways), no deeper than the missed part is wide farther out (a lost part). Looked up with the
    # missed pixels grown by one (a voxel whose footprint touches one counts), inside the undilated mask (so
    # under the carve's ramp), taken by max.
    added, missed = 0, np.zeros_like(mask_c)
    if config.fill and covered.any():
        missed = mask_c & ~covered
        centre, half = _slabs(covered, front, back, mask_c, distance=distance, focal=focal, cell=cell,
                              min_half=config.min_half_cells * cell, grow=config.grow_cells * cell)
        missed_near = binary_dilation(missed) & mask_c
        slabs = torch.from_numpy(np.stack([centre, half]))[None]
        if missed_near.any():
            y_lo, y_hi = float((centre - half)[missed_near].min()), float((centre + half)[missed_near].max())
        else:
            y_lo, y_hi = 1.0, 0.0
        for jj in np.flatnonzero((ay >= y_lo - cell) & (ay <= y_hi + cell) & (ay + distance > 1e-6)):
            dj = ay[jj] + distance
            cols = np.clip(np.floor((0.5 + focal * ax / dj) * c), 0, c - 1).astype(np.int64)
            rows = np.clip(np.floor((0.5 - focal * az / dj) * c), 0, c - 1).astype(np.int64)
            kk, ii = np.nonzero(missed_near[np.ix_(rows, cols)])
            if len(kk) == 0:
                continue
            depth_j = np.full(len(ii), dj)
            edge = _sample_pixels(sd, ax[ii], az[kk], depth_j, focal) * dj / (focal * s)
            c_ij, h_ij = _sample_pixels(slabs, ax[ii], az[kk], depth_j, focal)
            value = (threshold + slope * np.minimum(h_ij - np.abs(ay[jj] - c_ij), edge)).astype(np.float32)
            up = value > out[ii, jj, kk]
            out[ii[up], jj, kk[up]] = value[up]
            touched[ii[up], jj, kk[up]] = True
    if touched.any():
        # smooth what the carve and the fill changed, and its neighbours: no sub-voxel lip, slit or wedge is
        # left for the coarse-to-fine marching cubes and the decimation to fold into non-manifold edges
        box = _bounding_box(touched, margin=3)
        region = out[box]
        near = maximum_filter(touched[box], size=3)
        region[near] = gaussian_filter(region, CHANGE_SMOOTH_CELLS)[near]
        now = region > threshold
        added += int((now & ~inside[box]).sum())
        inside[box] = now
    if not inside.any():
        return CarveResult(arr, True, iou_before, iou_before, coverage_size=c,
                           warnings=["silhouette carving skipped: it would have removed the whole object"])
    covered_after, _, _ = _silhouette(inside, grid, distance, focal, c)
    n_before = max(n_inside, 1)
    return CarveResult(out, False, iou_before, _iou(covered_after, mask_c),
                       removed_fraction=float(removed.sum()) / n_before, added_fraction=added / n_before,
                       filled_pixels=int(missed.sum()), coverage_size=c)
