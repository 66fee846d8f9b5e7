"""Image pixels -> an 8-bit sRGB PNG, with the standard library and numpy (no colour-management
side effects on Blender's images; the bpy part that reads the pixels is ``images.py``)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np


def to_rgba8(px: np.ndarray, *, linear: bool) -> np.ndarray:
    """(H, W, C) float pixels, C in 1/3/4, rows bottom-up as Blender stores them -> (H, W, 4) uint8
    top-down sRGB RGBA. ``linear``: the values are linear scene light (a float image not tagged sRGB)."""
    h, w, c = px.shape
    px = px.astype(np.float32, copy=True)
    if c == 1:
        px = px.repeat(3, axis=2)
    if px.shape[2] == 3:
        px = np.concatenate([px, np.ones((h, w, 1), np.float32)], axis=2)
    if linear:  # linear -> sRGB for the model, which expects a photo
        rgb = np.clip(px[..., :3], 0.0, None)
        px[..., :3] = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    return np.ascontiguousarray((np.clip(px, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)[::-1])


def write_png(path: Path, rgba: np.ndarray) -> None:
    """Write (H, W, 4) uint8 top-down RGBA as a PNG (atomically: temp file + rename)."""
    h, w, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    tmp = path.with_suffix(".tmp.png")
    tmp.write_bytes(png)
    os.replace(tmp, path)
