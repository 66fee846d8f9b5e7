"""Binary-mask clean-up for the border-statistics remover (scipy.ndimage)."""

from __future__ import annotations

import numpy as np


def clean_mask(strong: np.ndarray, weak: np.ndarray, fillable: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool object mask from hysteresis seeds: weak pixels connected to strong ones, then
    closing (joins thin gaps), hole filling, and dropping islands far smaller than the object.

    Holes are filled when small, or when mostly ``fillable`` (pixels excluded as shadow-like that
    the object encloses, so they cannot be a shadow on the floor).
    """
    from scipy import ndimage

    h, w = strong.shape
    side = min(h, w)
    # Hysteresis: keep weak components that contain a strong pixel.
    labels, n = ndimage.label(weak)
    if n == 0:
        return np.zeros_like(strong)
    has_strong = np.zeros(n + 1, bool)
    has_strong[np.unique(labels[strong & weak])] = True
    has_strong[0] = False
    mask = has_strong[labels]
    # Speckle (noise, JPEG ringing) first, so closing does not glue it to the object.
    mask = ndimage.binary_opening(mask, _disk(1))
    r = max(1, round(side * 0.006))
    mask = _close(mask, r)
    mask = _fill_holes(mask, max_fraction=0.05, fillable=fillable)
    return keep_main_components(mask, min_fraction=0.05, min_pixels=max(16, int(1e-4 * h * w)))


def _close(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary closing with a disk, padded so it does not erode at the image border."""
    from scipy import ndimage

    padded = np.pad(mask, r, mode="edge")
    return ndimage.binary_closing(padded, _disk(r))[r:-r, r:-r]


def _disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r + r  # "+ r" rounds the disk like skimage's


def _fill_holes(mask: np.ndarray, max_fraction: float, fillable: np.ndarray | None = None) -> np.ndarray:
    """Fill enclosed regions smaller than ``max_fraction`` of the object's area or mostly ``fillable``.

    Large enclosed regions that look like background (a mug handle's opening) stay open.
    """
    from scipy import ndimage

    filled = ndimage.binary_fill_holes(mask)
    holes = filled & ~mask
    if not holes.any():
        return mask
    labels, n = ndimage.label(holes)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes <= max_fraction * max(int(mask.sum()), 1)
    if fillable is not None:
        small |= np.bincount(labels.ravel(), weights=fillable.ravel(), minlength=n + 1) > 0.5 * sizes
    small[0] = False
    return mask | small[labels]


def keep_main_components(mask: np.ndarray, min_fraction: float = 0.05, min_pixels: int = 16) -> np.ndarray:
    """Keep the largest 8-connected component and any other at least ``min_fraction`` of its size.

    Drops watermarks, dust and stray highlights; keeps an object made of a few separate parts.
    """
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = sizes >= max(min_fraction * sizes.max(), min_pixels)
    keep[0] = False
    return keep[labels]


def soften(mask: np.ndarray, sigma: float = 0.5) -> np.ndarray:
    """(H, W) float32 alpha: the bool mask with a sub-pixel feather so resized edges are not jagged."""
    from scipy import ndimage

    return ndimage.gaussian_filter(mask.astype(np.float32), sigma=sigma, mode="nearest")
