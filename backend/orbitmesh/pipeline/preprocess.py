"""Preprocessing stage: any image -> the object, centred with a border, on white, at the model's size.

    load (EXIF, any mode -> RGBA) -> background removal (alpha | rembg | border statistics)
    -> crop to the object -> recentre with ``border_ratio`` -> composite on white -> resize

``preprocess_image`` is the function (the LRM uses size 512, SV3D 576); ``PreprocessStage`` runs
it inside a job folder for the orchestrator.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from orbitmesh import atomic
from orbitmesh.errors import InputError
from orbitmesh.imaging.background import REMOVERS, remove_background
from orbitmesh.imaging.load import ImageSource, load_image
from orbitmesh.imaging.recentre import (
    composite_on_white,
    cutout_with_margin,
    object_bbox,
    recentre,
    touching_sides,
    with_alpha,
)
from orbitmesh.pipeline import modes
from orbitmesh.pipeline.orchestrator import StageContext
from orbitmesh.progress import ProgressCallback, null_progress

STAGE = modes.PREPROCESS
NO_OBJECT_FIX = ("use an image with one clear object on a plain background, or an image with transparency "
                 "around the object")


@dataclass
class PreprocessConfig:
    """Preprocessing settings (JSON-serialisable with ``asdict`` for job.json).

    ``remover``: 'auto' (a meaningful existing alpha, else rembg when installed and its model
    file is present locally, else the border-statistics fallback), 'alpha', 'rembg', 'border'
    or 'none' (keep the image as given). ``rembg_model_path``: the isnet-general-use .onnx file
    (default: rembg's own ``$U2NET_HOME`` / ``~/.u2net``); it is never downloaded.
    """

    size: int = 512
    border_ratio: float = 0.2
    remover: str = "auto"
    rembg_model_path: str | None = None

    def validate(self) -> "PreprocessConfig":
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 16 <= self.size <= 4096:
            raise InputError(f"preprocess size must be a whole number of pixels in [16, 4096], got {self.size!r}",
                             fix="use the model's input size, e.g. 512 (LRM) or 576 (SV3D)")
        ratio = self.border_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) \
                or not 0.0 <= ratio <= 0.9:
            raise InputError(f"border_ratio must be a number in [0, 0.9], got {ratio!r}",
                             fix="use 0.2 (the object then spans 80% of the image)")
        if self.remover not in REMOVERS:
            raise InputError(f"unknown background remover {self.remover!r}", fix=f"use one of {', '.join(REMOVERS)}")
        if self.rembg_model_path is not None and not isinstance(self.rembg_model_path, (str, Path)):
            raise InputError(f"rembg_model_path must be a path, got {type(self.rembg_model_path).__name__}",
                             fix="give the path of isnet-general-use.onnx")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["rembg_model_path"] is not None:
            d["rembg_model_path"] = str(d["rembg_model_path"])
        return d


@dataclass
class PreprocessResult:
    """The preprocessed object.

    image: PIL RGB (size, size), object on white, centred, longer side = size * (1 - border_ratio).
    rgba: PIL RGBA (size, size), the same with the object's alpha (transparent background).
    mask: (size, size) bool, object pixels of ``rgba`` (alpha >= 0.5).
    bbox: (x0, y0, x1, y1) of the object in source pixels (x1, y1 exclusive; after EXIF rotation).
    method: the remover that ran: 'alpha', 'rembg', 'border' or 'none'.
    warnings: problems worth telling the user (object touches the border, busy background, ...).
    cutout: PIL RGBA at source resolution, the object crop with a transparent margin; pass it back
        with ``remover='alpha'`` to recentre at another size without removing the background again.
    border_ratio: the border ``image`` was recentred with (recentring the cutout with it at another size
        frames the object exactly as ``image`` does).
    """

    image: Image.Image
    rgba: Image.Image
    mask: np.ndarray
    bbox: tuple[int, int, int, int]
    method: str
    warnings: list[str] = field(default_factory=list)
    cutout: Image.Image | None = None
    border_ratio: float = 0.2


def preprocess_image(source: ImageSource, *, size: int = 512, border_ratio: float = 0.2, remover: str = "auto",
                     rembg_model_path: str | None = None,
                     progress: ProgressCallback | None = None) -> PreprocessResult:
    """Load ``source`` (path, bytes or PIL image), cut out the object and recentre it (see module doc).

    Raises InputError (with a fix) for bad images and when no object is found; reports
    ``progress('preprocess', step, 3, message)`` after loading, background removal and recentring.
    """
    cfg = PreprocessConfig(size, border_ratio, remover, rembg_model_path).validate()
    return _run(source, cfg, progress or null_progress, total=3)


def _run(source: ImageSource, cfg: PreprocessConfig, progress: ProgressCallback, total: int) -> PreprocessResult:
    rgba = load_image(source)
    progress(STAGE, 1, total, f"loaded {rgba.width}x{rgba.height} image")
    cut = remove_background(rgba, cfg.remover, cfg.rembg_model_path)
    progress(STAGE, 2, total, f"background removed ({cut.method})")
    alpha = cut.alpha
    bbox = object_bbox(alpha)
    h, w = alpha.shape
    if bbox is None or int((alpha >= 0.5).sum()) < max(16, int(1e-4 * h * w)):
        why = "".join(f"; {w}" for w in cut.warnings)
        raise InputError(f"no object found in the image (background removal '{cut.method}' left nothing{why})",
                         fix=NO_OBJECT_FIX + (", or install rembg and its model" if cut.method == "border" else ""))
    warnings = list(cut.warnings)
    sides = touching_sides(alpha)
    if sides and not (cut.method == "none" and len(sides) == 4):
        warnings.append(f"object touches the image border ({', '.join(sides)}): it may be cropped")
    longest = max(bbox[2] - bbox[0], bbox[3] - bbox[1])
    target = cfg.size * (1.0 - cfg.border_ratio)
    if longest * 4 < target:
        warnings.append(f"the object is small ({longest} px across, scaled up {target / longest:.1f}x): "
                        "the result will be blurry; use a larger or tighter image")
    source_rgba = with_alpha(rgba, alpha)
    out = recentre(source_rgba, bbox, cfg.size, cfg.border_ratio)
    progress(STAGE, 3, total, "recentred")
    return PreprocessResult(image=composite_on_white(out), rgba=out,
                            mask=np.asarray(out.getchannel("A")) >= 128, bbox=bbox, method=cut.method,
                            warnings=warnings, cutout=cutout_with_margin(source_rgba, bbox),
                            border_ratio=cfg.border_ratio)


class PreprocessStage:
    """Orchestrator stage: ``state.image_path`` (or a PIL ``state.image``) -> job artefacts
    ``input.<ext>``, ``preprocessed.png``, ``mask.png`` and ``state.image`` (PIL RGB),
    ``state.mask`` ((size, size) bool), ``state.rgba``, ``state.preprocess`` (the PreprocessResult)
    and warnings."""

    name = STAGE
    needs = (("image_path", "image"),)
    gives = ("image", "mask", "rgba", "preprocess")

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        self.config = (config or PreprocessConfig()).validate()

    def run(self, ctx: StageContext) -> None:
        total = 4
        ctx.progress(STAGE, 0, total, "reading the input image")
        source = self._keep_input(ctx)
        result = _run(source, self.config, ctx.progress, total)
        job = ctx.job
        job.save_image("preprocessed.png", result.image)
        job.save_image("mask.png", Image.fromarray(result.mask.astype(np.uint8) * 255, "L"))
        state = ctx.state
        state.image, state.mask, state.rgba, state.preprocess = result.image, result.mask, result.rgba, result
        state.warn(*result.warnings)
        job.update(preprocess={"config": self.config.to_dict(), "method": result.method,
                               "bbox": list(result.bbox), "warnings": result.warnings})
        ctx.progress(STAGE, total, total, f"saved preprocessed.png ({result.method})")

    @staticmethod
    def _keep_input(ctx: StageContext) -> ImageSource:
        """Copy the original input into the job folder (atomically) and return what to load."""
        path = ctx.state.image_path
        if path:
            path = Path(path)
            if not path.is_file():
                raise InputError(f"image not found: {path}", fix="check the path")
            name = f"input{_input_suffix(path)}"
            with atomic.atomic_path(ctx.job.artefact(name)) as tmp:
                shutil.copyfile(path, tmp)
            ctx.job.add_artefact(name)
            return path
        image = ctx.state.image
        if isinstance(image, Image.Image):  # e.g. from the text-to-image stage
            ctx.job.save_image("input.png", image)
            return image
        raise InputError("no input image for preprocessing", fix="give an image path (or a prompt)")


_FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif"}


def _input_suffix(path: Path) -> str:
    """The input's own suffix when it is a plain one, else one from the detected format ('.bin' if none)."""
    suffix = path.suffix.lower()
    if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
        return suffix
    try:
        with Image.open(path) as im:  # header only
            fmt = im.format or ""
    except Exception:
        return ".bin"
    return _FORMAT_SUFFIX.get(fmt, f".{fmt.lower()}" if fmt.isalnum() else ".bin")
