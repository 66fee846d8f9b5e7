"""Preprocessing: robust loading, background removal, recentring and the pipeline stage.

Every input is generated here (objects with a known mask on plain, gradient and noisy
backgrounds; bad files written byte by byte), so the expected results are exact.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orbitmesh.errors import InputError, JobCancelled, ModelError
from orbitmesh.imaging import background as bgmod
from orbitmesh.imaging.background import remove_background, select_remover
from orbitmesh.imaging.load import load_image
from orbitmesh.jobs import JobFolder
from orbitmesh.pipeline import Orchestrator
from orbitmesh.pipeline.preprocess import PreprocessConfig, PreprocessStage, preprocess_image
from orbitmesh.progress import ProgressTracker

S = 256  # generated image side
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- generators

def object_mask(h: int = S, w: int = S, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(h, w) bool: an ellipse body plus a rectangular arm (a non-convex, off-centre object)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = 0.55 * h + shift[0], 0.45 * w + shift[1]
    body = ((x - cx) / (0.22 * w)) ** 2 + ((y - cy) / (0.28 * h)) ** 2 <= 1.0
    arm = (np.abs(y - (cy - 0.1 * h)) < 0.05 * h) & (x > cx) & (x < cx + 0.38 * w)
    return body | arm


def object_colours(h: int = S, w: int = S) -> np.ndarray:
    """(h, w, 3) float: a textured, colourful object surface (stripes + hue ramp)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 150 + 80 * np.sin(x / 9.0)
    g = 60 + 40 * np.cos(y / 13.0)
    b = 40 + 0.3 * x
    return np.stack([r, g, b], axis=-1)


def background(kind: str, h: int = S, w: int = S, seed: int = 0) -> np.ndarray:
    """(h, w, 3) float studio backgrounds: plain, linear gradient, radial vignette, noisy."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "plain":
        return np.broadcast_to(np.array([205.0, 208.0, 214.0]), (h, w, 3)).copy()
    if kind == "linear":
        t = ((x / w) * 0.6 + (y / h) * 0.4)[..., None]
        return (1 - t) * np.array([235.0, 236.0, 240.0]) + t * np.array([120.0, 130.0, 150.0])
    if kind == "radial":
        r2 = (((x - w / 2) / (w / 2)) ** 2 + ((y - h / 2) / (h / 2)) ** 2)[..., None]
        return np.array([225.0, 225.0, 228.0]) - r2 * np.array([90.0, 88.0, 80.0])
    if kind == "noisy":
        rng = np.random.default_rng(seed)
        return np.array([190.0, 195.0, 200.0]) + rng.normal(0.0, 8.0, (h, w, 3))
    raise ValueError(kind)


def scene(kind: str, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 (S, S, 3), known mask (S, S) bool) of the object on a ``kind`` background."""
    mask = object_mask() if mask is None else mask
    img = np.where(mask[..., None], object_colours(), background(kind))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def bbox_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def expected_output_mask(mask: np.ndarray, size: int, border_ratio: float) -> np.ndarray:
    """The known mask recentred independently of the code under test: crop, scale, centre."""
    x0, y0, x1, y1 = bbox_of(mask)
    scale = size * (1 - border_ratio) / max(x1 - x0, y1 - y0)
    nw, nh = round((x1 - x0) * scale), round((y1 - y0) * scale)
    crop = Image.fromarray(mask[y0:y1, x0:x1].astype(np.uint8) * 255).resize((nw, nh), Image.Resampling.BILINEAR)
    out = np.zeros((size, size), bool)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    out[oy:oy + nh, ox:ox + nw] = np.asarray(crop) >= 128
    return out


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, tag, data, CRC."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png16(array: np.ndarray) -> bytes:
    """Encode a (H, W, 3) uint16 array as a 16-bit RGB PNG (Pillow cannot write these)."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels, with no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def rgba_of(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb).convert("RGBA")


# ----------------------------------------------------------------------------- background removal

@pytest.mark.parametrize("kind", ["plain", "linear", "radial", "noisy"])
def test_border_fallback_recovers_the_known_mask(kind, mask_iou):
    rgb, mask = scene(kind)
    cut = remove_background(rgba_of(rgb), "border")
    assert cut.method == "border" and cut.alpha.shape == mask.shape
    assert mask_iou(cut.alpha >= 0.5, mask) >= 0.9


@pytest.mark.parametrize("kind", ["plain", "linear", "radial", "noisy"])
def test_preprocess_recentres_on_white(kind, mask_iou):
    rgb, mask = scene(kind)
    res = preprocess_image(Image.fromarray(rgb), size=200, border_ratio=0.2)
    assert res.method == "border" and res.warnings == []
    assert res.image.mode == "RGB" and res.image.size == (200, 200)
    assert res.rgba.mode == "RGBA" and res.rgba.size == (200, 200)
    assert res.mask.shape == (200, 200) and res.mask.dtype == bool
    assert mask_iou(res.mask, expected_output_mask(mask, 200, 0.2)) >= 0.9
    assert all(abs(a - b) <= 3 for a, b in zip(res.bbox, bbox_of(mask)))
    # Geometry: longer side = size * (1 - border_ratio), centred; the background is white.
    x0, y0, x1, y1 = bbox_of(res.mask)
    assert abs(max(x1 - x0, y1 - y0) - 160) <= 2
    assert abs((x0 + x1) / 2 - 100) <= 2 and abs((y0 + y1) / 2 - 100) <= 2
    px = np.asarray(res.image)
    # The object spans [20, 180) on its longer axis: the 19 px frame around it is pure white.
    assert (px[:19] == 255).all() and (px[:, :19] == 255).all()
    assert (px[-19:] == 255).all() and (px[:, -19:] == 255).all()
    assert (px[~res.mask & ~expected_output_mask(mask, 200, 0.2)] >= 250).mean() > 0.99


def test_noisy_jpeg_photo_and_border_ratio(mask_iou, png_bytes):
    rgb, mask = scene("noisy")
    res = preprocess_image(png_bytes(Image.fromarray(rgb), "JPEG", quality=85), size=128, border_ratio=0.5)
    assert mask_iou(res.mask, expected_output_mask(mask, 128, 0.5)) >= 0.9
    x0, y0, x1, y1 = bbox_of(res.mask)
    assert abs(max(x1 - x0, y1 - y0) - 64) <= 2


def test_rgba_input_keeps_its_alpha(png_bytes):
    rgb, mask = scene("plain")
    alpha = np.where(mask, 255, 0).astype(np.uint8)
    alpha[mask & (np.arange(S)[None, :] < 100)] = 128  # a half-transparent part must survive
    im = Image.fromarray(rgb).convert("RGBA")
    im.putalpha(Image.fromarray(alpha))
    x0, y0, x1, y1 = bbox_of(mask)
    size = round(max(x1 - x0, y1 - y0) / 0.8)  # scale 1: output pixels map 1:1 to source pixels
    res = preprocess_image(png_bytes(im), size=size, border_ratio=0.2)
    assert res.method == "alpha" and res.bbox == (x0, y0, x1, y1)
    out_alpha = np.asarray(res.rgba.getchannel("A"))
    ox, oy = (size - (x1 - x0)) // 2, (size - (y1 - y0)) // 2
    np.testing.assert_array_equal(out_alpha[oy:oy + y1 - y0, ox:ox + x1 - x0], alpha[y0:y1, x0:x1])
    # Composited on white: half-transparent pixels are the 50/50 blend of colour and white.
    sx, sy = x0 + 5, (y0 + y1) // 2
    assert alpha[sy, sx] == 128
    blend = (rgb[sy, sx].astype(int) * 128 + 255 * 127) / 255
    assert np.abs(np.asarray(res.image)[sy - y0 + oy, sx - x0 + ox] - blend).max() <= 2


def test_cutout_recentres_at_another_size_without_removing_again(mask_iou):
    rgb, mask = scene("linear")
    first = preprocess_image(Image.fromarray(rgb), size=128)
    again = preprocess_image(first.cutout, size=576, border_ratio=0.2)
    assert again.method == "alpha" and again.warnings == []
    assert mask_iou(again.mask, expected_output_mask(mask, 576, 0.2)) >= 0.9


def test_object_touching_the_border_is_reported(mask_iou):
    rgb, mask = scene("plain", object_mask(shift=(0, -90)))  # the body crosses the left edge
    res = preprocess_image(Image.fromarray(rgb), size=128)
    assert any("touches the image border (left)" in w for w in res.warnings)
    assert mask_iou(res.mask, expected_output_mask(mask, 128, 0.2)) >= 0.9


def test_small_object_is_reported_and_watermark_dropped():
    big = np.full((1024, 1024, 3), 200, np.uint8)
    big[500:540, 500:530] = (30, 160, 40)  # a 40 px object in a 1024 px photo
    big[990:996, 10:16] = (0, 0, 0)  # a tiny watermark in the corner
    res = preprocess_image(Image.fromarray(big), size=256)
    # The fallback works at 640 px, so its edges are within a source pixel or two at 1024 px.
    assert all(abs(a - b) <= 2 for a, b in zip(res.bbox, (500, 500, 530, 540)))
    assert any("small" in w for w in res.warnings)


# ----------------------------------------------------------------------------- bad inputs

def test_bad_inputs_get_clear_errors(tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    with pytest.raises(InputError, match="not an image") as e:
        load_image(not_image)
    assert e.value.fix
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="empty"):
        (tmp_path / "empty.jpg").write_bytes(b"")
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)
    with pytest.raises(InputError, match="cannot read an image"):
        load_image(12345)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt, png_bytes):
    rgb, _ = scene("noisy")
    data = png_bytes(Image.fromarray(rgb), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt") as e:
        preprocess_image(path)
    assert "re-export" in e.value.fix


def test_tiny_and_huge_images_are_refused_before_decoding(png_bytes):
    with pytest.raises(InputError, match=r"too small \(1x1 px\)"):
        load_image(png_bytes(Image.new("RGB", (1, 1), "red")))
    with pytest.raises(InputError, match=r"too small"):
        load_image(Image.new("RGB", (1, 1)))
    # Headers claiming 20000x20000 (PIL's bomb error) and 12000x12000 (our limit): no pixel
    # data exists, so reaching the decoder would say "truncated" instead.
    import tracemalloc

    tracemalloc.start()
    for w, h in ((20000, 20000), (12000, 12000), (16385, 100)):
        with pytest.raises(InputError, match="too large") as e:
            load_image(png_header_only(w, h))
        assert "resize" in e.value.fix
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20


def test_16bit_grayscale_png_is_scaled_not_clipped(mask_iou, png_bytes):
    rgb, mask = scene("radial")
    grey = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.uint16) * 257
    im16 = Image.fromarray(grey)
    assert im16.mode == "I;16"
    data = png_bytes(im16)
    loaded = load_image(data)
    assert loaded.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(loaded)[..., 0], grey // 257)
    res = preprocess_image(data, size=128)
    assert mask_iou(res.mask, expected_output_mask(mask, 128, 0.2)) >= 0.9


def test_16bit_rgb_png(mask_iou):
    rgb, mask = scene("linear")
    noise = np.random.default_rng(0).integers(-100, 101, rgb.shape)
    data = png16(np.clip(rgb.astype(np.int64) * 257 + noise, 0, 65535).astype(np.uint16))
    loaded = np.asarray(load_image(data))
    assert np.abs(loaded[..., :3].astype(int) - rgb).max() <= 1  # 16 -> 8 bits, not clipped or wrapped
    assert (loaded[..., 3] == 255).all()
    assert mask_iou(preprocess_image(data, size=128).mask, expected_output_mask(mask, 128, 0.2)) >= 0.9


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk(fmt, mask_iou, png_bytes):
    rgb, mask = scene("plain")
    data = png_bytes(Image.fromarray(rgb).convert("CMYK"), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    loaded = np.asarray(load_image(data))[..., :3].astype(int)
    assert np.abs(loaded - rgb).mean() < (0.5 if fmt == "TIFF" else 4.0)
    assert mask_iou(preprocess_image(data, size=128).mask, expected_output_mask(mask, 128, 0.2)) >= 0.9


def test_palette_and_grayscale(tmp_path, mask_iou, png_bytes):
    rgb, mask = scene("linear")
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    grey = Image.fromarray(rgb).convert("L")
    for name, im in (("pal.png", pal), ("grey.png", grey), ("grey.jpg", grey)):
        im.save(tmp_path / name)
        loaded = load_image(tmp_path / name)
        assert loaded.mode == "RGBA" and loaded.size == (S, S)
        res = preprocess_image(tmp_path / name, size=128)
        assert res.method == "border", name
        assert mask_iou(res.mask, expected_output_mask(mask, 128, 0.2)) >= 0.9, name
    # A palette image with a transparent index uses that transparency as the alpha.
    pal_t = Image.fromarray(np.where(mask, 1, 0).astype(np.uint8), "P")
    pal_t.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    pal_t.info["transparency"] = 0
    res = preprocess_image(png_bytes(pal_t, transparency=0), size=128)
    assert res.method == "alpha"
    assert mask_iou(res.mask, expected_output_mask(mask, 128, 0.2)) >= 0.95


def test_exif_orientation_is_applied(png_bytes):
    rgb, mask = scene("plain")
    im = Image.fromarray(rgb[:, :200])  # 200 wide, 256 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 clockwise
    loaded = load_image(png_bytes(im, "JPEG", exif=exif, quality=95))
    assert loaded.size == (256, 200)
    expected = np.asarray(im.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(np.asarray(loaded)[..., :3].astype(int) - expected).mean() < 3


def test_fully_transparent_and_no_object(png_bytes):
    clear = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    with pytest.raises(InputError, match="fully transparent") as e:
        preprocess_image(png_bytes(clear))
    assert e.value.fix
    rng = np.random.default_rng(1)
    empty = np.clip(180 + rng.normal(0, 4, (128, 128, 3)), 0, 255).astype(np.uint8)
    with pytest.raises(InputError, match="no object found") as e:
        preprocess_image(Image.fromarray(empty))
    assert "plain background" in e.value.fix


def test_bad_settings():
    rgb, _ = scene("plain")
    for kwargs, pattern in (({"size": 0}, "size"), ({"border_ratio": math.nan}, "border_ratio"),
                            ({"border_ratio": 1.0}, "border_ratio"), ({"remover": "magic"}, "unknown background")):
        with pytest.raises(InputError, match=pattern):
            preprocess_image(Image.fromarray(rgb), **kwargs)
    with pytest.raises(InputError, match="needs an image with transparency"):
        preprocess_image(Image.fromarray(rgb), remover="alpha")


def test_remover_none_keeps_the_whole_image():
    rgb, _ = scene("plain")
    res = preprocess_image(Image.fromarray(rgb[:, :128]), size=64, remover="none")
    assert res.method == "none" and res.bbox == (0, 0, 128, 256) and res.warnings == []


# ----------------------------------------------------------------------------- remover selection

def test_remover_selection_never_needs_the_network(tmp_path, monkeypatch):
    rgb, mask = scene("plain")
    opaque = rgba_of(rgb)
    cut = rgba_of(rgb)
    cut.putalpha(Image.fromarray(mask.astype(np.uint8) * 255))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    assert bgmod.rembg_model_file() == tmp_path / "u2net" / "isnet-general-use.onnx"
    assert bgmod.rembg_model_file("~/m.onnx") == Path.home() / "m.onnx"
    monkeypatch.delenv("U2NET_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert bgmod.rembg_model_file() == tmp_path / "xdg" / ".u2net" / "isnet-general-use.onnx"

    assert select_remover(cut, "auto") == "alpha"  # a meaningful alpha always wins in auto
    monkeypatch.setattr(bgmod, "rembg_installed", lambda: False)
    assert select_remover(opaque, "auto") == "border"
    with pytest.raises(ModelError, match="not installed"):
        select_remover(opaque, "rembg")

    monkeypatch.setattr(bgmod, "rembg_installed", lambda: True)
    model = tmp_path / "isnet.onnx"
    assert select_remover(opaque, "auto", str(model)) == "border"  # installed but no model file
    with pytest.raises(ModelError, match="never downloads") as e:
        select_remover(opaque, "rembg", str(model))
    assert "rembg_model_path" in e.value.fix
    model.write_bytes(b"onnx")
    assert select_remover(opaque, "auto", str(model)) == "rembg"
    assert select_remover(cut, "auto", str(model)) == "alpha"
    assert select_remover(opaque, "border", str(model)) == "border"


def test_auto_falls_back_when_rembg_fails(tmp_path, monkeypatch, mask_iou):
    rgb, mask = scene("plain")
    model = tmp_path / "isnet.onnx"
    model.write_bytes(b"not a real onnx model")
    monkeypatch.setattr(bgmod, "rembg_installed", lambda: True)

    def broken(*_):
        raise RuntimeError("onnxruntime cannot load the model")

    monkeypatch.setattr(bgmod, "rembg_alpha", broken)
    cut = remove_background(rgba_of(rgb), "auto", str(model))
    assert cut.method == "border" and "rembg failed" in cut.warnings[0]
    assert mask_iou(cut.alpha >= 0.5, mask) >= 0.9
    with pytest.raises(ModelError, match="rembg failed"):
        remove_background(rgba_of(rgb), "rembg", str(model))


# ----------------------------------------------------------------------------- pipeline stage

def test_stage_writes_artefacts_and_state(tmp_path, mask_iou):
    rgb, mask = scene("radial", object_mask(shift=(0, -90)))
    src = tmp_path / "My Photo.JPG"
    Image.fromarray(rgb).save(src, "JPEG", quality=95)
    job = JobFolder.create(tmp_path / "out", "my photo")
    events = []
    tracker = ProgressTracker(listener=events.append)
    config = PreprocessConfig(size=128)
    state, timings = Orchestrator([PreprocessStage(config)]).run(job, tracker, {"image_path": str(src),
                                                                               "warnings": ["earlier"]})
    assert (job.path / "input.jpg").read_bytes() == src.read_bytes()
    pre = Image.open(job.path / "preprocessed.png")
    assert pre.size == (128, 128) and pre.mode == "RGB"
    saved_mask = np.asarray(Image.open(job.path / "mask.png")) > 127
    assert np.array_equal(saved_mask, state.mask)
    assert mask_iou(state.mask, expected_output_mask(mask, 128, 0.2)) >= 0.9
    assert state.image.size == (128, 128) and state.preprocess.method == "border"
    assert state.warnings[0] == "earlier" and "touches the image border" in state.warnings[1]
    record = json.loads((job.path / "job.json").read_text())
    assert record["status"] == "done"
    assert {"input.jpg", "preprocessed.png", "mask.png"} <= set(record["artefacts"])
    assert record["preprocess"]["config"] == asdict(config) and record["preprocess"]["method"] == "border"
    json.dumps(asdict(config))
    steps = [(e.step, e.total) for e in events if e.stage == "preprocess"]
    assert steps[-1] == (4, 4) and len(steps) >= 5
    assert not [p for p in job.path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_stage_cancel_and_bad_input_leave_a_consistent_job(tmp_path):
    rgb, _ = scene("plain")
    src = tmp_path / "a.png"
    Image.fromarray(rgb).save(src)
    job = JobFolder.create(tmp_path / "out", "a")
    tracker = ProgressTracker()

    def cancel_after_background(event):
        if event.stage == "preprocess" and event.step == 2:
            tracker.cancel()

    tracker.listener = cancel_after_background
    with pytest.raises(JobCancelled):
        Orchestrator([PreprocessStage(PreprocessConfig(size=64))]).run(job, tracker, {"image_path": str(src)})
    assert JobFolder.open(job.path).status == "cancelled"
    assert not (job.path / "preprocessed.png").exists()

    bad = tmp_path / "bad.png"
    bad.write_bytes(PNG_SIGNATURE + b" garbage")
    job2 = JobFolder.create(tmp_path / "out", "bad")
    with pytest.raises(InputError):
        Orchestrator([PreprocessStage()]).run(job2, state={"image_path": str(bad)})
    record = JobFolder.open(job2.path).record
    assert record["status"] == "failed" and record["error"]["error"] == "InputError"
    assert record["error"]["fix"] and "input.png" in record["artefacts"]  # the bad input is kept


def test_stage_accepts_an_image_from_text_to_image(tmp_path, mask_iou):
    rgb, mask = scene("plain")
    job = JobFolder.create(tmp_path / "out", "prompt")
    state, _ = Orchestrator([PreprocessStage(PreprocessConfig(size=96))]).run(
        job, state={"image": Image.fromarray(rgb)})
    assert (job.path / "input.png").is_file()
    assert mask_iou(state.mask, expected_output_mask(mask, 96, 0.2)) >= 0.9
