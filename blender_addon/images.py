"""An image open in Blender as a file the backend can read (main thread only; the encoding is core.png)."""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from .core.errors import AddonError
from .core.png import to_rgba8, write_png


def export_image_datablock(image, work_dir: Path) -> str:
    """A file path for an image open in Blender: its own file when unchanged on disk, else a PNG copy."""
    if image.source == "FILE" and not image.packed_file and not image.is_dirty:
        path = bpy.path.abspath(image.filepath, library=image.library)
        if path and os.path.isfile(path):
            return path
    w, h = image.size
    if w == 0 or h == 0:
        raise AddonError(f"the image '{image.name}' has no pixels loaded",
                         fix="open it in the Image Editor once, or pick an image file instead")
    px = np.empty(w * h * image.channels, dtype=np.float32)
    image.pixels.foreach_get(px)
    linear = image.is_float and image.colorspace_settings.name not in ("sRGB", "Non-Color")
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / "input.png"
    write_png(out, to_rgba8(px.reshape(h, w, image.channels), linear=linear))
    return str(out)
