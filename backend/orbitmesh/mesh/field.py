"""Checks on a density field and the mapping between grid indices and world coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orbitmesh.errors import InputError

MIN_RESOLUTION = 8


@dataclass(frozen=True)
class Grid:
    """A cubic grid of R samples per axis spanning [lo, hi] per axis (samples on the box corners).

    Index i along an axis maps to ``lo + i * (hi - lo) / (R - 1)`` (the LRM's ``linspace(-1, 1, R)``).
    """

    resolution: int
    lo: np.ndarray  # (3,) float64
    hi: np.ndarray  # (3,) float64

    @property
    def spacing(self) -> np.ndarray:
        return (self.hi - self.lo) / (self.resolution - 1)

    def to_world(self, ijk: np.ndarray) -> np.ndarray:
        """(N, 3) grid index coordinates -> (N, 3) float32 world positions."""
        return (self.lo + ijk * self.spacing).astype(np.float32)


def parse_bbox(bbox) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` scalars (a cube) or two 3-vectors -> ((3,), (3,)) float64."""
    try:
        lo, hi = bbox
        lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (3,)).copy()
        hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (3,)).copy()
    except (TypeError, ValueError) as exc:
        raise InputError(f"bbox must be (lo, hi) scalars or two 3-vectors, got {bbox!r}",
                         fix="pass e.g. bbox=(-1, 1)") from exc
    if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi > lo).all()):
        raise InputError(f"bbox must be finite with hi > lo on every axis, got {bbox!r}",
                         fix="pass e.g. bbox=(-1, 1)")
    return lo, hi


def check_field(density, threshold: float, bbox=(-1, 1)) -> tuple[np.ndarray, Grid]:
    """Validate a density field; returns it as a float32 (R, R, R) array and its Grid.

    Raises InputError naming the problem: not 3-D, not cubic, smaller than 8^3, NaN/inf
    values, a non-finite threshold.
    """
    try:
        arr = np.asarray(density, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"density must be a numeric (R, R, R) array, got {type(density).__name__}",
                         fix="pass a numpy array (e.g. tensor.cpu().numpy())") from exc
    if arr.ndim != 3:
        raise InputError(f"density must be a 3-D (R, R, R) array, got shape {arr.shape}",
                         fix="reshape the grid to (R, R, R), indexing 'ij'")
    if len(set(arr.shape)) != 1:
        raise InputError(f"density must be cubic (R, R, R), got shape {arr.shape}",
                         fix="sample the field on the same number of points along x, y and z")
    if arr.shape[0] < MIN_RESOLUTION:
        raise InputError(f"density grid {arr.shape} is too small to hold a closed surface "
                         f"(need at least {MIN_RESOLUTION}^3)",
                         fix="sample the field on a finer grid, e.g. 256^3")
    if not np.isfinite(float(threshold)):
        raise InputError(f"threshold must be a finite number, got {threshold!r}", fix="pass e.g. threshold=1.0")
    # One summed pass is far cheaper than isfinite() over 512^3; only an overflowing sum needs the full check.
    if not np.isfinite(arr.sum()):
        bad = ~np.isfinite(arr)
        n_nan = int(np.isnan(arr).sum())
        raise InputError(f"density contains {int(bad.sum())} non-finite values ({n_nan} NaN, "
                         f"{int(bad.sum()) - n_nan} inf)",
                         fix="replace them before meshing, e.g. np.nan_to_num(density, nan=0.0, posinf=0.0)")
    lo, hi = parse_bbox(bbox)
    return arr, Grid(arr.shape[0], lo, hi)


def touches_boundary(arr: np.ndarray, threshold: float) -> bool:
    """True when any sample on the grid's six border faces is inside (> threshold)."""
    faces = (arr[0], arr[-1], arr[:, 0], arr[:, -1], arr[:, :, 0], arr[:, :, -1])
    return any(bool((f > threshold).any()) for f in faces)
