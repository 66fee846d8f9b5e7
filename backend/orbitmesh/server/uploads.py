"""Upload validation: an uploaded image is decoded (Pillow) before a job is queued.

A non-image, a truncated file or an absurd size is a 400 at upload time rather than a
failed job later. The size check reads only the header, so a 20000x20000 bomb is never
allocated.
"""

from __future__ import annotations

import io
import json
import warnings

from orbitmesh.server.api_errors import bad_request

# Pillow format -> the extension the upload is saved under (never the client's name).
FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif", "GIF": "gif"}
MIN_SIDE = 16
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192


def validate_image(data: bytes) -> tuple[str, tuple[int, int]]:
    """Decode ``data`` fully; return (extension, (width, height)) or raise a 400 ApiError."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise bad_request("the uploaded image is empty (0 bytes)", fix="attach the image file's contents",
                          code="empty_upload")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's own header check fired first
        raise bad_request(f"the image is too large to process ({exc})",
                          fix=f"downscale it to at most {MAX_SIDE} pixels per side", code="invalid_image") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise bad_request("the upload is not an image Pillow can read",
                          fix=f"send a {', '.join(sorted(FORMATS))} image", code="invalid_image") from None
    with img:
        if img.format not in FORMATS:
            raise bad_request(f"image format {img.format} is not accepted",
                              fix=f"convert it to PNG or JPEG (accepted: {', '.join(sorted(FORMATS))})",
                              code="invalid_image")
        w, h = img.size
        if min(w, h) < MIN_SIDE:
            raise bad_request(f"the image is only {w}x{h} pixels",
                              fix=f"use an image at least {MIN_SIDE} pixels on each side (512+ is best)",
                              code="invalid_image")
        if max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
            raise bad_request(f"the image is {w}x{h} pixels, too large to process",
                              fix=f"downscale it to at most {MAX_SIDE} pixels per side and "
                                  f"{MAX_PIXELS // 10**6} megapixels", code="invalid_image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
        except Exception as exc:  # truncated/corrupt data: Pillow raises OSError, SyntaxError, ...
            raise bad_request(f"the image could not be decoded ({type(exc).__name__}: {exc})",
                              fix="the file is truncated or corrupt: export it again", code="invalid_image") from None
        return FORMATS[img.format], (w, h)


MAX_JSON_DEPTH = 32  # settings are flat; anything deeper is an attack or a mistake


def parse_settings_json(text: bytes | str, what: str = "settings") -> dict:
    """A JSON object from a form field or a body; 400 for anything else (bad JSON, another type, nesting deeper
    than MAX_JSON_DEPTH, integers too long to parse)."""
    if _depth_exceeds(text, MAX_JSON_DEPTH):
        raise bad_request(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep",
                          fix='send a flat JSON object such as {"seed": 1, "texture_size": 1024}',
                          code="invalid_json")
    try:
        value = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"{what} is not valid JSON: {exc}",
                          fix='send a JSON object such as {"seed": 1, "texture_size": 1024}',
                          code="invalid_json") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise bad_request(f"{what} holds a value that cannot be read: {str(exc)[:120]}",
                          fix="send numbers of ordinary size (a seed fits in 64 bits)",
                          code="invalid_settings") from None
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object, got {type(value).__name__}",
                          fix='send a JSON object such as {"seed": 1}', code="invalid_json")
    return value


def _depth_exceeds(text: bytes | str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (checked before parsing, which recurses)."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False
