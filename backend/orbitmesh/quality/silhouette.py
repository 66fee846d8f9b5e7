"""Silhouette-faithful shape: cut a density grid to the input view's mask, and fill what the model lost.

A triplane model's outline drifts from the object's: it spills past the photo's edge in places and
loses thin parts in others. The input mask, seen from a camera we know exactly, says where the object
is. Before meshing, :func:`carve_density`

* carves: every point that projects outside the mask, dilated by ``dilate_fraction`` of the image
  width so mask noise survives, is pulled below the threshold (so nothing projects outside it);
* fills: mask pixels whose ray the model's surface misses get a slab of density, centred on the
  depth of the nearest covered pixel and about as thick as that pixel's object is, no thicker than
  the missed part is wide (a lost pole comes back roughly round) and at least ``min_half_cells``
  thick so the coarse marching cubes keeps it.

Both are written as a linear ramp in world units (``threshold + slope * signed distance``, taken by
min for the carve and max for the fill), so marching cubes places the new surface on the mask's edge
to a fraction of a cell instead of a voxel staircase. When the model's silhouette and the mask
disagree grossly (IoU under ``min_iou``: a wrong mask, or an object the background removal cut
apart) nothing is changed and a warning says so.

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
from scipy.ndimage import binary_dilation, distance_transform_edt, gaussian_filter

from orbitmesh.errors import InputError
from orbitmesh.mesh.field import Grid, check_field

FILL_SMOOTH_PX = 1.5  # smoothing of the fill's depths over neighbouring pixels (coverage pixels)
ZONE_PX = 2  # the fill also raises this many covered pixels around the missed ones, so the two join smoothly


@dataclass
class CarveConfig:
    """``dilate_fraction``: the mask grows by this share of the image width before carving (mask noise
    survives); ``ramp_cells``: the new surface's density ramp changes by the threshold's size over this many
    cells (steep enough to hold the edge, gentle enough for marching cubes to place it between samples);
    ``min_iou``: below this agreement between the model's silhouette and the mask, skip; ``fill``: also fill
    mask pixels the model missed: within ``grow_cells`` of its surface by extending its rim sideways, farther
    by slabs at least 2x ``min_half_cells`` thick (the coarse-to-fine marching cubes keeps them)."""

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


def _fill_maps(covered: np.ndarray, front: np.ndarray, back: np.ndarray, mask_c: np.ndarray, *,
               distance: float, focal: float, cell: float, min_half: float, grow: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where and how to fill: the mask pixels the model missed plus a ``ZONE_PX`` band of covered pixels
    around them (so the new surface joins the old one smoothly), each with a slab along its ray: centred on
    the depth range of the nearest covered pixel (its own, for a covered one) and, within ``grow`` (world)
    of it, as deep as that range (the model's rim filled out sideways); farther (a part the model lost)
    no deeper than the part is wide, and at least ``min_half``. Returns (fill (C, C) bool: missed pixels,
    zone (C, C) bool, centre (world y), half (world))."""
    fill = mask_c & ~covered
    if not fill.any() or not covered.any():
        zero = np.zeros(fill.shape, np.float32)
        return np.zeros_like(fill), np.zeros_like(fill), zero, zero
    zone = binary_dilation(fill, iterations=ZONE_PX) & mask_c
    gap, (qy, qx) = distance_transform_edt(~covered, return_indices=True)
    f, b = front[qy, qx], back[qy, qx]
    centre = 0.5 * (f + b)
    # a missed ray's slab reaches half a cell past its neighbour's range; a covered ray's stays a cell inside
    # its own, so it adds no second sheet next to the surface that is there (decimation would pinch them)
    half = 0.5 * (b - f) + np.where(covered, -cell, 0.5 * cell)
    # neighbouring pixels may take their depth from different covered pixels: smooth over the zone
    # (normalised convolution) so the new surface does not come out as a row of spikes
    weight = gaussian_filter(zone.astype(np.float32), FILL_SMOOTH_PX)
    for arr in (centre, half):
        arr[zone] = (gaussian_filter(np.where(zone, arr, 0.0).astype(np.float32), FILL_SMOOTH_PX)[zone]
                     / np.maximum(weight[zone], 1e-6))
    size = covered.shape[0]
    px = (centre + distance) / (focal * size)  # one coverage pixel at that depth, world
    width = distance_transform_edt(mask_c) * px  # to the mask's edge
    lost = gap * px > grow
    half = np.maximum(np.where(lost, np.minimum(half, width), half), min_half)
    return fill, zone, centre.astype(np.float32), half.astype(np.float32)


def _sample_pixels(image: torch.Tensor, x: np.ndarray, z: np.ndarray, depth: np.ndarray, focal: float) -> np.ndarray:
    """Bilinear samples of a (1, C, S, S) image at the projections of (N,) points (x, z, view depth) ->
    (N,) for one channel, (C, N) for several."""
    g = np.stack([2.0 * focal * x / depth, -2.0 * focal * z / depth], -1).astype(np.float32)  # 2 (u - 0.5)
    out = F.grid_sample(image, torch.from_numpy(g).view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                        align_corners=False)[0, :, 0]
    return (out[0] if out.shape[0] == 1 else out).numpy()


def _fill_pockets(out: np.ndarray, inside: np.ndarray, value: float) -> int:
    """Set every air sample enclosed by the object (6-connected air not reaching the object's bounding box
    border) to ``value`` (just inside), in ``out`` and ``inside``; returns how many."""
    from scipy.ndimage import label

    box = []
    for axis in range(3):
        used = np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != axis)))
        if len(used) == 0:
            return 0
        box.append(slice(max(int(used[0]) - 1, 0), min(int(used[-1]) + 2, inside.shape[axis])))
    box = tuple(box)
    labels, n = label(~inside[box])
    if n <= 1:
        return 0
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    outside = np.unique(np.concatenate([f.ravel() for f in faces]))
    pocket = (labels > 0) & ~np.isin(labels, outside)
    region = out[box]
    region[pocket] = np.maximum(region[pocket], np.float32(value))
    inside[box] |= pocket
    return int(pocket.sum())


def carve_density(density: np.ndarray, threshold: float, bbox, mask: np.ndarray, *, distance: float,
                  focal: float, config: CarveConfig | None = None) -> CarveResult:
    """Carve ``density`` (R, R, R) to ``mask`` (S, S) bool (the source view, row 0 at the top) and fill the
    mask pixels the model missed (see the module docstring for the geometry). Returns a new array; the
    input is not modified.

    Only samples above the threshold are carved (the rest are outside already, and the new surface's
    crossings lie on edges from a kept sample to a carved one, whose ramp values place it), and only the
    fill slabs are added, so the cost follows the object, not the grid."""
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

    # carve: every inside sample down to the ramp of the dilated mask's signed distance (world units); the
    # per-slice factors come from tables, the per-sample work stays in float32
    idx = np.flatnonzero(inside)
    i = idx // (r * r)
    j = idx // r - i * r
    k = idx - (i * r + j) * r
    depth = ay + distance  # per slice
    ahead = depth > 1e-6  # slices at or behind the camera hold nothing of the object
    to_grid = np.where(ahead, 2.0 * focal / np.maximum(depth, 1e-6), 0.0).astype(np.float32)  # 2 (u - 0.5) / x
    to_ramp = (slope * depth / (focal * s)).astype(np.float32)  # density per pixel of signed distance
    per_sample = to_grid[j]
    g = np.stack([ax.astype(np.float32)[i] * per_sample, -az.astype(np.float32)[k] * per_sample], -1)
    d_px = F.grid_sample(sd, torch.from_numpy(g).view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                         align_corners=False).view(-1).numpy()
    ramp = np.float32(threshold) + (d_px + np.float32(config.dilate_fraction * s)) * to_ramp[j]
    ramp = np.where(ahead[j], np.maximum(ramp, np.float32(floor)), np.float32(floor))
    flat = out.reshape(-1)
    new = np.minimum(flat[idx], ramp)
    flat[idx] = new
    removed = new <= threshold
    inside.reshape(-1)[idx[removed]] = False

    # fill, slice by slice over the slabs' depth range: a smooth slab along each ray of the zone (inside the
    # undilated mask, so under the carve's ramp), taken by max with what is there
    fill, zone, centre, half = (_fill_maps(covered, front, back, mask_c, distance=distance, focal=focal,
                                           cell=cell, min_half=config.min_half_cells * cell,
                                           grow=config.grow_cells * cell)
                                if config.fill else (np.zeros_like(mask_c),) * 2 + (None,) * 2)
    added = 0
    if fill.any():
        slabs = torch.from_numpy(np.stack([centre, half]).astype(np.float32))[None]  # (1, 2, C, C)
        y_lo, y_hi = float((centre - half)[zone].min()), float((centre + half)[zone].max())
        for jj in np.flatnonzero((ay >= y_lo - cell) & (ay <= y_hi + cell) & (ay + distance > 1e-6)):
            dj = ay[jj] + distance
            cols = np.clip(np.floor((0.5 + focal * ax / dj) * c), 0, c - 1).astype(np.int64)
            rows = np.clip(np.floor((0.5 - focal * az / dj) * c), 0, c - 1).astype(np.int64)
            kk, ii = np.nonzero(zone[np.ix_(rows, cols)])
            if len(kk) == 0:
                continue
            c_ij, h_ij = _sample_pixels(slabs, ax[ii], az[kk], np.full(len(ii), dj), focal)  # smooth across pixels
            t_in = h_ij - np.abs(ay[jj] - c_ij)
            edge = _sample_pixels(sd, ax[ii], az[kk], np.full(len(ii), dj), focal) * dj / (focal * s)
            value = (threshold + slope * np.minimum(t_in, edge)).astype(np.float32)
            up = value > out[ii, jj, kk]
            out[ii[up], jj, kk[up]] = value[up]
            now = value[up] > threshold
            added += int((now & ~inside[ii[up], jj, kk[up]]).sum())
            inside[ii[up][now], jj, kk[up][now]] = True
        # the new surface can close off dents of the old one into pockets of air inside the object: fill
        # them (marching cubes would make tiny inner shells that decimation pinches into non-manifold edges)
        added += _fill_pockets(out, inside, threshold + 0.05 * scale)
    n_before = max(len(idx), 1)
    if not inside.any():
        return CarveResult(arr, True, iou_before, iou_before, coverage_size=c,
                           warnings=["silhouette carving skipped: it would have removed the whole object"])
    covered_after, _, _ = _silhouette(inside, grid, distance, focal, c)
    return CarveResult(out, False, iou_before, _iou(covered_after, mask_c),
                       removed_fraction=float(removed.sum()) / n_before, added_fraction=added / n_before,
                       filled_pixels=int(fill.sum()), coverage_size=c)
