"""Load any image Pillow can read as an 8-bit, EXIF-upright RGBA image, or fail clearly.

Sizes are checked from the header before any pixel is decoded, so a 20000x20000 file (or a
decompression bomb) is refused without allocating it. 16-bit, CMYK, palette, grayscale and
float images are converted (with scaling, not clipping); ICC profiles are honoured when
Pillow's littleCMS is available.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from orbitmesh.errors import InputError

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image]

MIN_SIDE = 16  # smaller than this has no object worth reconstructing
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192  # below PIL's own bomb warning (about 89 MP)
MAX_FILE_BYTES = 512 * 1024 * 1024
OPAQUE_FIX = "use an image whose object is visible (alpha above zero), or remove the alpha channel"


def load_image(source: ImageSource) -> Image.Image:
    """Return ``source`` as an 8-bit RGBA PIL image, EXIF-transposed (first frame of animations).

    ``source``: a path, encoded file bytes, or a PIL image. Raises InputError (with a fix)
    for a missing/empty/unreadable/truncated file, a size outside [MIN_SIDE, MAX_SIDE] or
    above MAX_PIXELS, an unsupported colour mode, or a fully transparent image.
    """
    if isinstance(source, Image.Image):
        _check_size(source.size, "image")
        return _finish(_to_rgba(_decode(source, "image")), "image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InputError("the image data is empty", fix="pass the bytes of an image file (PNG, JPEG, ...)")
        return _load_file(io.BytesIO(bytes(source)), "image data")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"image not found: {path}", fix="check the path")
        if not path.is_file():
            raise InputError(f"not a file: {path}", fix="give the path of an image file, not a folder")
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"the image file is empty (0 bytes): {path}", fix="re-export or re-download the image")
        if size > MAX_FILE_BYTES:
            raise InputError(f"the image file is too large ({size / 2**20:.0f} MiB): {path}",
                             fix=f"use a file under {MAX_FILE_BYTES // 2**20} MiB (resize or recompress it)")
        with open(path, "rb") as fh:
            return _load_file(fh, str(path))
    raise InputError(f"cannot read an image from a {type(source).__name__}",
                     fix="pass a file path, the file's bytes, or a PIL image")


def _load_file(fh, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our MAX_PIXELS check below is stricter than PIL's warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fh)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name} is too large to decode safely ({exc})",
                         fix=f"resize it to at most {MAX_SIDE} px per side") from None
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image Pillow can read",
                         fix="use a PNG, JPEG, WebP, TIFF or BMP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name} cannot be read as an image: {exc}",
                         fix="re-export the image as PNG or JPEG") from None
    with im:
        _check_size(im.size, name)  # header only: nothing decoded yet
        return _finish(_to_rgba(_decode(im, name)), name)


def _check_size(size: tuple[int, int], name: str) -> None:
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise InputError(f"{name} is too small ({w}x{h} px)",
                         fix=f"use an image at least {MIN_SIDE} px on each side (512 or more works best)")
    if max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
        raise InputError(f"{name} is too large ({w}x{h} px)",
                         fix=f"resize it to at most {MAX_SIDE} px per side and {MAX_PIXELS // 10**6} megapixels")


def _decode(im: Image.Image, name: str) -> Image.Image:
    """Decode the pixels (truncated files fail here) and apply the EXIF orientation."""
    try:
        im.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, zlib.error, struct.error... for bad data
        raise InputError(f"{name} is truncated or corrupt ({type(exc).__name__}: {exc})",
                         fix="re-export or re-download the image") from None
    try:
        upright = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not cost the image; use it as stored
        upright = im
    if upright is not im:
        return upright
    copy = im.copy()
    copy.info = dict(im.info)
    return copy


def _to_rgba(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGBA, scaling high bit depths instead of clipping them."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_rgba(im)
    icc = im.info.get("icc_profile")
    if icc and mode in ("RGB", "RGBA", "CMYK", "L", "LA"):
        converted = _icc_to_srgb(im, icc)
        if converted is not None:
            return converted
    if mode == "RGBA":
        return im
    if mode in ("RGB", "L", "LA", "La", "RGBa", "P", "PA", "1", "CMYK", "YCbCr", "RGBX"):
        return im.convert("RGBA")
    if mode in ("LAB", "HSV"):
        return im.convert("RGB").convert("RGBA")
    try:
        return im.convert("RGBA")
    except (ValueError, OSError):
        raise InputError(f"unsupported colour mode {mode!r}", fix="re-export the image as 8-bit RGB(A) PNG") from None


def _high_depth_to_rgba(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float grayscale -> RGBA, mapped to 0..255 by the value range."""
    a = np.asarray(im)
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        hi = 1.0 if a.max(initial=0.0) <= 1.0 else float(a.max())
        lo = min(0.0, float(a.min(initial=0.0)))
        grey = (a - lo) / max(hi - lo, 1e-12) * 255.0
    else:
        a = a.astype(np.int64)
        if im.mode.startswith("I;16"):
            scale = 65535
        else:  # "I" (32-bit): 16-bit PNG/TIFF data in older Pillow, or 8-bit data promoted
            top = int(a.max(initial=0))
            scale = 255 if top <= 255 else 65535 if top <= 65535 else top
        grey = np.clip(a, 0, None) * (255.0 / scale)
    grey8 = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return Image.fromarray(grey8, "L").convert("RGBA")


def _icc_to_srgb(im: Image.Image, icc: bytes) -> Image.Image | None:
    """Convert with the embedded ICC profile to sRGB; None when littleCMS or the profile fails."""
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        alpha = im.getchannel("A") if im.mode in ("RGBA", "LA") else None
        base = im.convert("RGB") if im.mode in ("RGBA", "LA") else im
        if base.mode == "L" and src.profile.xcolor_space.strip() != "GRAY":
            return None
        rgb = ImageCms.profileToProfile(base, src, dst, outputMode="RGB")
        if rgb is None:
            return None
        out = rgb.convert("RGBA")
        if alpha is not None:
            out.putalpha(alpha)
        return out
    except Exception:  # a broken or unusual profile: fall back to Pillow's plain conversion
        return None


def _finish(rgba: Image.Image, name: str) -> Image.Image:
    alpha = np.asarray(rgba.getchannel("A"))
    if int(alpha.max(initial=0)) < 8:
        raise InputError(f"{name} is fully transparent: there is no object to reconstruct", fix=OPAQUE_FIX)
    return rgba
