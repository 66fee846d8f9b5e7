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
  marching cubes keeps it. The slabs also cover the model's own rays for ``FILL_OVERLAP_PX`` pixels
  past its outline, so the new surface overlaps the model's instead of meeting it along a ray-thin
  slit. What the carve and the fill changed, and every sample within the filter's reach of it, is
  then smoothed (a 1-cell Gaussian): pixel-sized steps and slits would otherwise be left as sub-cell
  lips and wedges that the coarse-to-fine marching cubes folds (its vertices pulled onto a fine surface
  the coarse grid did not see) and the fast decimation pinches into non-manifold edges, which sends it
  to its slow fallback.

Both are written as a linear ramp in world units (``threshold + slope * signed distance``, taken by
min for the carve and max for the fill), so marching cubes places the new surface on the mask's edge
to a fraction of a cell instead of a voxel staircase. When the model's silhouette and the mask
disagree grossly (IoU under ``min_iou``: a wrong mask, or an object the background removal cut
apart) nothing is changed and a warning says so. Only samples near the mask's edge are visited (and
smoothed, block by block), so the cost follows the object's outline more than the grid.

Geometry: the grid is in the pipeline's output frame (:mod:`orbitmesh.pipeline.reconstruct`): (R, R, R)
samples over the box, indexing 'ij' = (x, y, z), samples on the box corners. The source camera sits at
(0, -distance, 0) looking along +y, world up +z (image right = +x, image up = +z), with normalised
focal length ``focal`` and the principal point at the image centre; a point's view depth is y + distance.
A grid slice of constant y therefore maps onto the image by a scale alone, which keeps every step a
batched 2-D lookup.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation, distance_transform_edt, gaussian_filter

from orbitmesh.errors import InputError
from orbitmesh.mesh.field import Grid, check_field

SLAB_SMOOTH_PX = 1.5  # the fill's slab depths are smoothed over this many neighbouring pixels (coverage pixels)
FILL_OVERLAP_PX = 2  # the fill's slabs also cover the model's rays this many coverage pixels past its outline
CHANGE_SMOOTH_CELLS = 1.0  # what the carve and the fill changed is smoothed by a Gaussian of this many cells
SMOOTH_BAND = 2.0  # changes are smoothed only near the surface: within this many thresholds of it before or after
SMOOTH_TRUNCATE = 2.0  # the Gaussian's radius, in sigmas: the samples within it of a change are smoothed too
SMOOTH_BLOCK = 16  # the smoothing runs on the grid's blocks of this many cells that hold a change


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


def _extents(inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Ri, Rj), (Rj, Rk) bool: which x and z indices of each y slice hold an inside sample."""
    return inside.any(axis=2), inside.any(axis=0)


def _silhouette(inside: np.ndarray, grid: Grid, distance: float, focal: float, size: int,
                extents: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = inside.shape[0]
    ay = _axes(r, grid.lo, grid.hi)[1]
    centres = (np.arange(size) + 0.5) / size - 0.5  # normalised image coordinate of each pixel centre
    covered = np.zeros((size, size), bool)
    first = np.full((size, size), -1, np.int64)
    last = np.full((size, size), -1, np.int64)
    along_i, along_k = extents if extents is not None else _extents(inside)  # each slice's extent
    for j in np.flatnonzero(along_k.any(axis=1)):  # the slices holding anything, front to back
        depth = ay[j] + distance
        if depth <= 1e-6:
            continue
        i_has, k_has = np.flatnonzero(along_i[:, j]), np.flatnonzero(along_k[j])
        # column -> x index, row -> z index (image up = +z); only the pixels over the slice's extent
        ii, kk = _nearest_samples(centres, -centres, depth, focal, grid)
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


def _pixels(x: np.ndarray, z: np.ndarray, depth, focal: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, rows) int64 of the size x size pixels that points (x, z) at view ``depth`` project into."""
    cols = np.clip(np.floor((0.5 + focal * x / depth) * size), 0, size - 1).astype(np.int64)
    rows = np.clip(np.floor((0.5 - focal * z / depth) * size), 0, size - 1).astype(np.int64)
    return cols, rows


def _nearest_samples(u: np.ndarray, v: np.ndarray, depth: float, focal: float, grid: Grid
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(x, z) int64 indices (unclipped) of the grid samples nearest to where the rays through normalised image
    coordinates (u right, v up; 0 at the centre) cross the slice at view ``depth``."""
    ii = np.rint((u * depth / focal - grid.lo[0]) / grid.spacing[0]).astype(np.int64)
    kk = np.rint((v * depth / focal - grid.lo[2]) / grid.spacing[2]).astype(np.int64)
    return ii, kk


def _covered_pixels(inside: np.ndarray, grid: Grid, distance: float, focal: float, size: int, rows: np.ndarray,
                    cols: np.ndarray, slices: np.ndarray) -> np.ndarray:
    """(P,) bool: :func:`_silhouette`'s coverage of the pixels (rows, cols) only (the same nearest-sample
    rule), for the few pixels whose rays a change crossed; ``slices`` (R,) bool: the y slices that may hold
    an inside sample."""
    r = inside.shape[0]
    ay = _axes(r, grid.lo, grid.hi)[1]
    hit = np.zeros(len(rows), bool)
    if len(rows) == 0:
        return hit
    cx = (cols + 0.5) / size - 0.5
    cz = -((rows + 0.5) / size - 0.5)
    for j in np.flatnonzero(slices & (ay + distance > 1e-6)):
        depth = ay[j] + distance
        ii, kk = _nearest_samples(cx, cz, depth, focal, grid)
        ok = (ii >= 0) & (ii < r) & (kk >= 0) & (kk < r) & ~hit
        hit[ok] = inside[ii[ok], j, kk[ok]]
    return hit


def _smooth_changes(out: np.ndarray, changed: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-smooth (``sigma`` cells, truncated at ``SMOOTH_TRUNCATE`` sigmas; in place) every sample of
    ``out`` (R, R, R) within the Gaussian's radius (a cube) of a ``changed`` one ((N,) flat indices), from the
    unsmoothed values. Only the ``SMOOTH_BLOCK``-sized blocks that hold such samples are filtered, all at once
    as one batch of windows (each block with the margin the filter reads). Returns the flat indices of the
    smoothed samples and their values before."""
    r = out.shape[0]
    radius = int(SMOOTH_TRUNCATE * sigma + 0.5)  # scipy's radius for this sigma and truncation
    b = min(SMOOTH_BLOCK, r)
    width = min(b + 2 * radius, r)  # a block and the margin its samples' filters read
    ijk = np.stack(np.unravel_index(changed, out.shape), 1)
    nb = (r - 1) // b + 1
    lo, hi = np.clip((ijk - radius) // b, 0, nb - 1), np.clip((ijk + radius) // b, 0, nb - 1)
    occupied = np.zeros((nb, nb, nb), bool)
    for n in range(8):  # radius < b: a change's reach overlaps at most two blocks along each axis
        occupied[tuple((lo, hi)[(n >> a) & 1][:, a] for a in range(3))] = True
    origins = np.argwhere(occupied) * b  # (K, 3) block corners
    # each block's window: centred on it, slid inside the grid at its borders (where the filter reflects, as it
    # would on the whole grid)
    starts = np.clip(origins - (width - b) // 2, 0, r - width)
    touched = np.zeros(out.shape, bool)
    touched.reshape(-1)[changed] = True
    windows = [tuple(slice(int(a), int(a) + width) for a in st) for st in starts]
    values = np.stack([out[w] for w in windows])
    # scipy's filter lets go of the GIL: the two halves of the batch run at once, and the change indicator is
    # grown by the filter's radius (a cube, where its kernel is positive) meanwhile
    smooth = np.empty_like(values)
    half = (len(values) + 1) // 2
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(gaussian_filter, values[h], sigma=(0.0,) + (sigma,) * 3, truncate=SMOOTH_TRUNCATE,
                            output=smooth[h]) for h in (slice(0, half), slice(half, len(values)))]
        near = _grow_box(np.stack([touched[w] for w in windows]), radius)
        for job in jobs:
            job.result()
    # each sample once: from the window of the block it belongs to
    core = np.zeros(near.shape, bool)
    for n, (o, st) in enumerate(zip(origins, starts)):
        a0, a1, a2 = o - st
        core[n, a0:a0 + b, a1:a1 + b, a2:a2 + b] = True
    near &= core
    n, wi, wj, wk = np.nonzero(near)
    idx = ((wi + starts[n, 0]) * r + wj + starts[n, 1]) * r + wk + starts[n, 2]
    before = out.reshape(-1)[idx]
    out.reshape(-1)[idx] = smooth[near]
    return idx, before


def _grow_box(flags: np.ndarray, radius: int) -> np.ndarray:
    """(K, W, W, W) bool grown by ``radius`` along the last three axes (a cube per True sample), within each
    window: one shifted OR per axis and step."""
    for axis in (1, 2, 3):
        grown = flags.copy()
        for step in range(1, radius + 1):
            lo = [slice(None)] * 4
            hi = [slice(None)] * 4
            lo[axis], hi[axis] = slice(0, -step), slice(step, None)
            grown[tuple(hi)] |= flags[tuple(lo)]
            grown[tuple(lo)] |= flags[tuple(hi)]
        flags = grown
    return flags


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


def carve_density(density: np.ndarray, threshold: float, bbox, mask: np.ndarray, *, distance: float,
                  focal: float, config: CarveConfig | None = None, inplace: bool = False) -> CarveResult:
    """Carve ``density`` (R, R, R) to ``mask`` (S, S) bool (the source view, row 0 at the top) and fill the
    mask pixels the model missed (see the module docstring for the geometry). Returns a new array and leaves
    the input alone, unless ``inplace`` (a C-contiguous float32 input is then changed and returned, which
    spares a copy of the grid; when the carve is skipped it is left as it was).

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
    n_inside = int(np.count_nonzero(inside))
    extents = _extents(inside)
    # the mask's signed distance (needed unless the carve is skipped) meanwhile, on a second thread: scipy's
    # distance transform lets go of the GIL
    with ThreadPoolExecutor(1) as pool:
        mask_sd = pool.submit(signed_distance, mask)
        covered, front, back = _silhouette(inside, grid, distance, focal, c, extents)
        mask_sd = mask_sd.result()
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
    sd = torch.from_numpy(mask_sd)[None, None]  # (1, 1, S, S) pixels
    ax, ay, az = _axes(r, grid.lo, grid.hi)
    own = inplace and isinstance(density, np.ndarray) and density.dtype == np.float32 and density.flags.c_contiguous
    out = density if own else arr.copy()
    undo = []  # (flat indices, values before) of every write, to restore an in-place input when skipping

    # carve: every inside sample down to the ramp of the dilated mask's signed distance (world units). Only
    # samples near or outside the mask's edge can be affected (deeper in, the ramp is above any density):
    # those are picked slice by slice on the coverage grid (within the slice's own extent), then carved one
    # by one in float32.
    depth = ay + distance  # per slice
    ahead = depth > 1e-6  # slices at or behind the camera hold nothing of the object
    to_grid = np.where(ahead, 2.0 * focal / np.maximum(depth, 1e-6), 0.0).astype(np.float32)  # 2 (u - 0.5) / x
    to_ramp = (slope * depth / (focal * s)).astype(np.float32)  # density per pixel of signed distance
    dilate_px = config.dilate_fraction * s
    block_px = s / c  # mask pixels per coverage pixel
    sd_c = _sd_lower_bound(sd, c)
    reach = float(arr.max()) - threshold  # the most the ramp may need to take off
    along_i, along_k = extents
    picked = []
    for jj in np.flatnonzero(along_k.any(axis=1)):
        i_has, k_has = np.flatnonzero(along_i[:, jj]), np.flatnonzero(along_k[jj])
        i0, i1, k0, k1 = i_has[0], i_has[-1] + 1, k_has[0], k_has[-1] + 1
        if ahead[jj]:
            safe_px = reach / to_ramp[jj] - dilate_px + block_px + 1.0  # deeper than this in the mask: untouched
            cols, rows = _pixels(ax[i0:i1], az[k0:k1], depth[jj], focal, c)
            near = (sd_c[np.ix_(rows, cols)] < safe_px).T & inside[i0:i1, jj, k0:k1]  # (i, k)
        else:
            near = inside[i0:i1, jj, k0:k1]
        ii, kk = np.nonzero(near)
        picked.append(((ii + i0) * r + jj) * r + kk + k0)
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
    undo.append((idx, old))
    removed = new <= threshold
    inside.reshape(-1)[idx[removed]] = False
    # the samples the carve or the fill changed near the surface (within SMOOTH_BAND of the threshold before or
    # after: farther ones cannot move it, even smoothed), by flat index: they and their neighbours are smoothed
    band = SMOOTH_BAND * scale
    changed = [idx[(new < old) & (np.minimum(np.abs(old - threshold), np.abs(new - threshold)) < band)]]

    # fill, slice by slice: every mask pixel the model misses gets a slab along its ray, centred on the depth
    # range of the nearest covered pixel: as deep as that range next to the model's outline (its rim carried
    # out sideways), no deeper than the missed part is wide farther out (a lost part). Looked up with the
    # missed pixels grown by FILL_OVERLAP_PX (a voxel whose footprint touches one counts, and the slabs
    # overlap the model's own rays next to them), inside the undilated mask (so under the carve's ramp),
    # taken by max.
    missed, filled = np.zeros_like(mask_c), []
    if config.fill and covered.any():
        missed = mask_c & ~covered
        centre, half = _slabs(covered, front, back, mask_c, distance=distance, focal=focal, cell=cell,
                              min_half=config.min_half_cells * cell, grow=config.grow_cells * cell)
        missed_near = binary_dilation(missed, iterations=FILL_OVERLAP_PX) & mask_c
        slabs = torch.from_numpy(np.stack([centre, half]))[None]
        if missed_near.any():
            y_lo, y_hi = float((centre - half)[missed_near].min()), float((centre + half)[missed_near].max())
            used_r, used_c = np.flatnonzero(missed_near.any(axis=1)), np.flatnonzero(missed_near.any(axis=0))
        else:
            y_lo, y_hi = 1.0, 0.0
        found = []  # (ii, jj, kk) of the samples whose pixels are in missed_near, slice by slice
        for jj in np.flatnonzero((ay >= y_lo - cell) & (ay <= y_hi + cell) & (ay + distance > 1e-6)):
            dj = ay[jj] + distance
            cols, rows = _pixels(ax, az, dj, focal, c)
            # only the x and z indices whose pixels can be in missed_near (cols rise with x, rows fall with z)
            i0, i1 = np.searchsorted(cols, used_c[0]), np.searchsorted(cols, used_c[-1], side="right")
            k0, k1 = np.searchsorted(-rows, -used_r[-1]), np.searchsorted(-rows, -used_r[0], side="right")
            if i1 > i0 and k1 > k0:
                kk, ii = np.nonzero(missed_near[np.ix_(rows[k0:k1], cols[i0:i1])])
                found.append((ii + i0, np.full(len(ii), jj), kk + k0))
        if found:
            ii, jj, kk = (np.concatenate(a) for a in zip(*found))
            dj = ay[jj] + distance
            edge = _sample_pixels(sd, ax[ii], az[kk], dj, focal) * dj / (focal * s)
            c_ij, h_ij = _sample_pixels(slabs, ax[ii], az[kk], dj, focal)
            value = (threshold + slope * np.minimum(h_ij - np.abs(ay[jj] - c_ij), edge)).astype(np.float32)
            flat_ijk = (ii * r + jj) * r + kk
            before = flat[flat_ijk]
            up = value > before
            flat[flat_ijk[up]] = value[up]
            filled.append(flat_ijk[up])
            undo.append((flat_ijk[up], before[up]))
            changed.append(flat_ijk[up & (np.minimum(np.abs(before - threshold), np.abs(value - threshold)) < band)])
    changed = np.concatenate(changed)
    smoothed = np.zeros(0, np.int64)
    if len(changed):
        # smooth what the carve and the fill changed, and its neighbours: no sub-voxel lip, slit or wedge is
        # left for the coarse-to-fine marching cubes and the decimation to fold into non-manifold edges
        smoothed, before = _smooth_changes(out, changed, CHANGE_SMOOTH_CELLS)
        undo.append((smoothed, before))
    # the samples that may have changed side since the carve: the filled and the smoothed ones
    since = np.unique(np.concatenate([smoothed, *filled]))
    now = out.reshape(-1)[since] > threshold
    was = inside.reshape(-1)[since]
    added = int((now & ~was).sum())
    inside.reshape(-1)[since] = now
    # samples inside now, counted from the changes (a pass over the whole grid costs more than the rest of this)
    n_after = n_inside - int(removed.sum()) + added - int((was & ~now).sum())
    if n_after <= 0:
        for where, values in reversed(undo):
            out.reshape(-1)[where] = values
        return CarveResult(arr, True, iou_before, iou_before, coverage_size=c,
                           warnings=["silhouette carving skipped: it would have removed the whole object"])
    # the coverage after: only the pixels whose rays crossed a change can differ: those the changed samples
    # project into, grown by the pixels whose centres are nearest to the same sample (up to half a cell away)
    recount = np.concatenate([since, idx[removed]])
    si = recount // (r * r)
    sj = recount // r - si * r
    sk = recount - (si * r + sj) * r
    in_view = ahead[sj]
    si, sj, sk = si[in_view], sj[in_view], sk[in_view]
    crossed = np.zeros((c, c), bool)
    if len(sj):
        cols, rows = _pixels(ax[si], az[sk], depth[sj], focal, c)
        crossed[rows, cols] = True
        pixel = float(depth[sj].min()) / (focal * c)  # the smallest pixel footprint among the changed samples
        grow = max(1, int(np.floor(0.5 + 0.5 * float(grid.spacing.max()) / pixel)))
        crossed = binary_dilation(crossed, np.ones((2 * grow + 1, 2 * grow + 1), bool))
    pr, pc = np.nonzero(crossed)
    covered_after = covered.copy()
    slices = along_k.any(axis=1)  # the slices that held anything, and those the fill reached
    slices[np.unique(sj)] = True
    covered_after[pr, pc] = _covered_pixels(inside, grid, distance, focal, c, pr, pc, slices)
    n_before = max(n_inside, 1)
    return CarveResult(out, False, iou_before, _iou(covered_after, mask_c),
                       removed_fraction=float(removed.sum()) / n_before, added_fraction=added / n_before,
                       filled_pixels=int(missed.sum()), coverage_size=c)
