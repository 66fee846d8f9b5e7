"""Crop to the object, recentre it on a square canvas with a border, composite on white."""

from __future__ import annotations

import numpy as np
from PIL import Image

BBOX_ALPHA = 0.2  # soft edges down to this alpha count as object when cropping
BBox = tuple[int, int, int, int]


def object_bbox(alpha: np.ndarray, threshold: float = BBOX_ALPHA) -> BBox | None:
    """(x0, y0, x1, y1) of ``alpha >= threshold`` in pixels, x1/y1 exclusive; None when empty.

    ``alpha``: (H, W) float in [0, 1].
    """
    ys = np.flatnonzero((alpha >= threshold).any(axis=1))
    xs = np.flatnonzero((alpha >= threshold).any(axis=0))
    if len(xs) == 0:
        return None
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def touching_sides(alpha: np.ndarray, threshold: float = 0.5) -> list[str]:
    """Image sides the object touches (more than a few pixels of its outermost row/column)."""
    h, w = alpha.shape
    solid = alpha >= threshold
    rows = {"top": solid[0], "bottom": solid[-1], "left": solid[:, 0], "right": solid[:, -1]}
    return [side for side, line in rows.items() if line.sum() > max(2, 0.005 * len(line))]


def with_alpha(rgba: Image.Image, alpha: np.ndarray) -> Image.Image:
    """Copy of ``rgba`` whose alpha channel is ``alpha`` ((H, W) float in [0, 1])."""
    out = rgba.convert("RGBA")
    out.putalpha(Image.fromarray(np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8), "L"))
    return out


def recentre(rgba: Image.Image, bbox: BBox, size: int, border_ratio: float) -> Image.Image:
    """The ``bbox`` crop of ``rgba`` scaled so its longer side is ``size * (1 - border_ratio)``,
    centred on a transparent ``size`` x ``size`` RGBA canvas.

    PIL resizes RGBA premultiplied, so transparent background colour does not bleed into edges.
    """
    x0, y0, x1, y1 = bbox
    bw, bh = x1 - x0, y1 - y0
    target = size * (1.0 - border_ratio)
    scale = target / max(bw, bh)
    nw = min(size, max(1, round(bw * scale)))
    nh = min(size, max(1, round(bh * scale)))
    crop = rgba.crop(bbox).resize((nw, nh), Image.Resampling.BICUBIC)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(crop, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def composite_on_white(rgba: Image.Image) -> Image.Image:
    """RGB image: ``rgba`` over an opaque white background."""
    return composite_on(rgba, 1.0)


def composite_on(rgba: Image.Image, grey: float) -> Image.Image:
    """RGB image: ``rgba`` over an opaque grey background (``grey`` in [0, 1]; 1 is white)."""
    level = int(round(255 * grey))
    back = Image.new("RGBA", rgba.size, (level, level, level, 255))
    return Image.alpha_composite(back, rgba).convert("RGB")


def cutout_with_margin(rgba: Image.Image, bbox: BBox) -> Image.Image:
    """The bbox crop with a transparent margin (about 4% of its longer side), at source resolution.

    Lets a later stage recentre at another size (SV3D's 576) with ``remover='alpha'`` without
    running background removal again; the margin keeps the alpha meaningful and off the border.
    """
    x0, y0, x1, y1 = bbox
    m = max(2, round(0.04 * max(x1 - x0, y1 - y0)))
    crop = rgba.crop(bbox)
    out = Image.new("RGBA", (crop.width + 2 * m, crop.height + 2 * m), (0, 0, 0, 0))
    out.paste(crop, (m, m))
    return out
