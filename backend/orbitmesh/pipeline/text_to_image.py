"""Prompt -> image: the text-to-image stage in front of the image pipeline.

Any diffusers text-to-image pipeline works (``AutoPipelineForText2Image``: SD 1.x/2.x,
SDXL, SD3, Flux, PixArt, ...), from a hub id, the hub cache, or a local folder written by
``save_pretrained`` / ``hf download --local-dir``. Nothing is loaded at import or at
construction: the stage loads the pipeline in ``run``, makes the image(s), writes
``prompt_image.png`` into the job folder, points ``ctx.state["image_path"]`` at it for the
preprocess stage and releases the pipeline before the 3D models load.

Default model: ``stabilityai/sdxl-turbo`` (distilled SDXL: 4 steps, no guidance, 512x512,
about 7 GB of fp16 weights; fits 12 GB GPUs, 8 GB ones with ``offload``). Its licence is
non-commercial (Stability AI Community License): ``list_text_to_image_models()`` shows it
and the alternatives, ``orbitmesh doctor`` prints the default.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from orbitmesh.errors import InputError, ModelError
from orbitmesh.pipeline.orchestrator import StageContext
from orbitmesh.pipeline.prompting import PROMPT_TEMPLATE, PromptPlan, build_prompt, validate_prompt
from orbitmesh.settings import DEVICES, DTYPES

STAGE = "text_to_image"
IMAGE_NAME = "prompt_image.png"


@dataclass(frozen=True)
class TextToImageModel:
    """A known text-to-image model: where it lives, its licence and its sampling defaults."""

    id: str
    family: str
    licence: str
    licence_url: str
    steps: int
    guidance_scale: float
    size: int
    vram_gb: float  # fp16 weights, roughly; what must fit on the GPU without offloading
    fp16_variant: bool = True
    note: str = ""


KNOWN_MODELS: dict[str, TextToImageModel] = {m.id: m for m in (
    TextToImageModel("stabilityai/sdxl-turbo", "turbo",
                     "Stability AI Community License (non-commercial; sai-nc-community)",
                     "https://huggingface.co/stabilityai/sdxl-turbo/blob/main/LICENSE.TXT",
                     4, 0.0, 512, 7.0, note="default: good objects in 4 steps; 8 GB GPUs need offload"),
    TextToImageModel("stabilityai/sd-turbo", "turbo",
                     "Stability AI Community License (non-commercial; sai-nc-community)",
                     "https://huggingface.co/stabilityai/sd-turbo/blob/main/LICENSE.TXT",
                     4, 0.0, 512, 2.6, note="smallest/fastest; weaker shapes"),
    TextToImageModel("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd",
                     "CreativeML OpenRAIL-M (commercial use allowed under its use restrictions)",
                     "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5",
                     30, 7.5, 512, 2.6, note="permissive licence; 30 steps with guidance"),
    TextToImageModel("stabilityai/stable-diffusion-xl-base-1.0", "sdxl",
                     "CreativeML OpenRAIL++-M (commercial use allowed under its use restrictions)",
                     "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0",
                     30, 6.0, 1024, 7.0, note="permissive licence, best quality, slow (30 steps at 1024)"),
    TextToImageModel("black-forest-labs/FLUX.1-schnell", "turbo", "Apache-2.0",
                     "https://huggingface.co/black-forest-labs/FLUX.1-schnell",
                     4, 0.0, 1024, 24.0, fp16_variant=False, note="12B parameters: needs offload below 24 GB"),
)}
DEFAULT_MODEL = "stabilityai/sdxl-turbo"

# Words in a model's name that mark a distilled few-step model (no classifier-free guidance).
_DISTILLED = ("turbo", "lightning", "hyper", "schnell", "lcm", "flash")
# Defaults by pipeline class for models not in KNOWN_MODELS: (steps, guidance).
_CLASS_DEFAULTS = {"StableDiffusionXLPipeline": (30, 6.0), "StableDiffusion3Pipeline": (28, 7.0),
                   "FluxPipeline": (28, 3.5), "PixArtAlphaPipeline": (20, 4.5), "PixArtSigmaPipeline": (20, 4.5)}


def list_text_to_image_models(model_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Known models with licence, defaults, memory and whether they are on this machine (no network)."""
    out = []
    for m in KNOWN_MODELS.values():
        row = asdict(m)
        row["default"] = m.id == DEFAULT_MODEL
        row["available"] = find_local_model(m.id, model_dir) is not None
        out.append(row)
    return out


def default_model_info(model_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The default model's row of :func:`list_text_to_image_models` (for doctor / health)."""
    return next(r for r in list_text_to_image_models(model_dir) if r["default"])


def model_family_defaults(model: str, pipeline_class: str | None = None) -> tuple[int, float]:
    """(steps, guidance_scale) for a model: the known table, a distilled-name rule, the pipeline class."""
    model = str(model or "").replace("\\", "/").rstrip("/")
    for known in KNOWN_MODELS.values():  # a hub id, or a folder named like one (.../stabilityai/sdxl-turbo)
        if model == known.id or model.endswith("/" + known.id):
            return known.steps, known.guidance_scale
    name = model.rsplit("/", 1)[-1].lower()
    if any(word in name for word in _DISTILLED):
        return 4, 0.0
    return _CLASS_DEFAULTS.get(pipeline_class or "", (30, 7.5))


def find_local_model(model: str, model_dir: str | os.PathLike | None = None) -> Path | None:
    """A local diffusers folder for ``model`` (a folder path, or a hub id under the model folder
    or in the hub cache), or None. Never touches the network."""
    path = Path(model).expanduser()
    if (path / "model_index.json").is_file():
        return path
    if model_dir is not None and "/" in model and not path.is_absolute():
        owner, name = model.split("/", 1)
        for cand in (Path(model_dir) / owner / name, Path(model_dir) / f"{owner}--{name}", Path(model_dir) / name):
            if (cand / "model_index.json").is_file():
                return cand
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model_index.json")
        if isinstance(cached, str):
            return Path(cached).parent
    except Exception:  # not a valid repo id, or no hub library: not in the cache
        pass
    return None


def _how_to_get(model: str, model_dir: str | os.PathLike | None) -> str:
    known = KNOWN_MODELS.get(model)
    licence = f"licence: {known.licence}, {known.licence_url}; " if known else ""
    target = Path(model_dir) / model if model_dir else Path("<model folder>") / model
    include = ' --include "*.json" "*.txt" "*.fp16.safetensors"' if known and known.fp16_variant else ""
    return (f"{licence}accept the licence, then on a machine with internet run "
            f"`hf download {model}{include} --local-dir {target}` (or copy a diffusers folder there), "
            f"or pass a local folder with --text-to-image-model")


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a TCP connection (no request is made)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def from_pretrained(path_or_repo: str, *, local_files_only: bool = False, device: str | None = None,
                    dtype: Any = None, model_dir: str | os.PathLike | None = None):
    """Build the diffusers text-to-image pipeline for a hub id or a local folder.

    Called only when a prompt job runs; ``device`` None leaves it on the CPU. Downloads only when ``local_files_only`` is False and
    the model is not on disk; any failure is a ModelError naming the model, its licence and
    how to put it into the model folder.
    """
    local = find_local_model(path_or_repo, model_dir)
    looks_like_path = (Path(path_or_repo).expanduser().is_dir() or path_or_repo.startswith((".", "~", "/", "\\"))
                       or (len(path_or_repo) > 1 and path_or_repo[1] == ":"))
    if local is None and looks_like_path:
        raise ModelError(f"text-to-image model folder {path_or_repo} is not a diffusers pipeline "
                         "(no model_index.json)", fix="point to a folder written by save_pretrained or hf download")
    if local is None and (local_files_only or _hub_offline()):
        raise ModelError(f"text-to-image model {path_or_repo} is not on this machine (offline mode)",
                         fix=_how_to_get(path_or_repo, model_dir))
    if local is None and not _hub_reachable():
        # Checked up front: the hub client would otherwise retry for most of a minute.
        raise ModelError(f"text-to-image model {path_or_repo} is not on this machine and the Hugging Face hub "
                         "is unreachable", fix=_how_to_get(path_or_repo, model_dir))
    import importlib.util

    import torch
    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import deprecation_utils

    dtype = dtype or torch.float32
    source = str(local) if local is not None else path_or_repo
    options: dict[str, Any] = {"local_files_only": local_files_only or local is not None}
    # diffusers 0.36 renamed torch_dtype to dtype; without accelerate it would log a hint per load.
    options["dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"] = dtype
    if importlib.util.find_spec("accelerate") is None:
        options["low_cpu_mem_usage"] = False
    # Prefer the fp16 weight files for half precision (half the download), the full ones for fp32.
    variants = ["fp16", None] if dtype in (torch.float16, torch.bfloat16) else [None, "fp16"]
    pipe, errors = None, []
    with _quiet_loading():
        for variant in variants:
            try:
                pipe = AutoPipelineForText2Image.from_pretrained(source, variant=variant, **options)
                break
            except Exception as exc:  # OSError/ValueError/HTTP errors: try the other variant, then explain
                errors.append(exc)
    if pipe is None:
        first = str(errors[0]).strip().splitlines()
        raise ModelError(f"could not load text-to-image model {path_or_repo}: {type(errors[0]).__name__}"
                         + (f": {first[0]}" if first else ""), fix=_how_to_get(path_or_repo, model_dir)) from errors[0]
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device)
    return pipe


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No diffusers/transformers loading bars on the console: the stage reports its own progress."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


@dataclass
class TextToImageConfig:
    """Settings of the text-to-image stage. None means "the model family's default"."""

    model: str = DEFAULT_MODEL
    steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None  # None: the model's native size (512 for the turbo models)
    height: int | None = None
    num_candidates: int = 1
    local_files_only: bool = False
    device: str = "auto"
    dtype: str = "auto"
    offload: bool = False  # sequential CPU offload of the submodels (needs accelerate)
    model_dir: str | None = None  # where hub ids are looked up first (Settings.model_dir)
    template: str | None = PROMPT_TEMPLATE  # None: send the prompt as typed
    negative_prompt: str | None = None  # None: the default object-shot negative prompt

    def validate(self) -> "TextToImageConfig":
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError("text-to-image model is empty", fix=f"pass a hub id or a folder, e.g. {DEFAULT_MODEL}")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or not 1 <= self.steps <= 200):
            raise InputError(f"text-to-image steps must be a whole number from 1 to 200, got {self.steps!r}",
                             fix="leave it unset for the model's default")
        if self.guidance_scale is not None:
            g = self.guidance_scale
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or not 0 <= g <= 30:
                raise InputError(f"guidance_scale must be a number from 0 to 30, got {g!r}",
                                 fix="leave it unset for the model's default (0 for turbo models)")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 64 <= v <= 2048 or v % 8):
                raise InputError(f"text-to-image {name} must be a multiple of 8 from 64 to 2048, got {v!r}",
                                 fix="leave it unset for the model's native size")
        n = self.num_candidates
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 8:
            raise InputError(f"num_candidates must be from 1 to 8, got {n!r}", fix="use 1 (fast) to 4 (safer)")
        if self.device not in DEVICES:
            raise InputError(f"unknown device {self.device!r}", fix=f"use one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}", fix=f"use one of {', '.join(DTYPES)}")
        return self


def foreground_score(image) -> tuple[float, bool]:
    """How complete the generated object looks: (area fraction of the largest foreground
    component that does not touch the border, whether every component touches it).

    Foreground is whatever differs from the background colour (median of the border
    pixels) by more than 10% in some channel; specks under 0.5% of the image are ignored.
    """
    import numpy as np
    from scipy import ndimage

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    mask = np.abs(rgb - np.median(border, axis=0)).max(axis=2) > 0.1
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return 0.0, False
    touching = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))) - {0}
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    inner = [areas[i] for i in range(1, count + 1) if i not in touching and areas[i] >= 0.005 * mask.size]
    best = max(inner, default=0) / mask.size
    return float(best), not inner and bool(touching)


def choose_candidate(images: list) -> tuple[int, list[float]]:
    """Index of the image with the most complete object (see :func:`foreground_score`; ties go
    to the earlier seed) and every image's score."""
    scores = [foreground_score(im)[0] for im in images]
    return max(range(len(images)), key=lambda i: (scores[i], -i)), scores


class TextToImageStage:
    """Stage ``text_to_image``: ``ctx.state["prompt"]`` + ``["seed"]`` -> ``prompt_image.png``.

    Sets ``ctx.state["image_path"]`` (the preprocess stage takes over from there),
    ``ctx.state["effective_prompt"]`` and appends warnings to ``ctx.state["warnings"]``;
    records the prompts and settings in job.json under ``text_to_image``.
    """

    name = STAGE

    def __init__(self, config: TextToImageConfig | None = None) -> None:
        self.config = config or TextToImageConfig()

    def run(self, ctx: StageContext) -> None:
        cfg = self.config.validate()
        validate_prompt(ctx.state.get("prompt"))  # fail before loading gigabytes of weights
        seed = ctx.state.get("seed", 42)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise InputError(f"seed must be a whole number from 0 to 2**32-1, got {seed!r}", fix="pass e.g. 42")
        ctx.progress(STAGE, 0, 1, f"loading {cfg.model}")
        from orbitmesh.device import resolve_device, resolve_dtype

        device = resolve_device(cfg.device)
        pipe = from_pretrained(cfg.model, local_files_only=cfg.local_files_only,
                               dtype=resolve_dtype(cfg.dtype, device), model_dir=cfg.model_dir)
        warnings = ctx.state.setdefault("warnings", [])
        try:
            self._place(pipe, device, warnings)
            tokenizers = [t for t in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)) if t]
            plan = build_prompt(ctx.state["prompt"], tokenizers, template=cfg.template, negative=cfg.negative_prompt)
            warnings.extend(plan.warnings)
            images, used = self._generate(ctx, pipe, plan, seed, warnings)
        except BaseException as exc:
            _drop_frame_locals(exc.__traceback__)
            raise
        finally:
            release_pipeline(pipe, device)
            del pipe
        self._write(ctx, images, plan, seed, used)

    # -- helpers -----------------------------------------------------------------------

    def _place(self, pipe, device: str, warnings: list[str]) -> None:
        if self.config.offload and device == "cuda":
            try:
                pipe.enable_model_cpu_offload()  # one submodel on the GPU at a time
                return
            except Exception as exc:  # accelerate missing / too old
                warnings.append(f"text-to-image offload unavailable ({exc}); install accelerate to use it")
        pipe.to(device)

    def _sampling(self, pipe) -> tuple[int, float]:
        steps, guidance = model_family_defaults(self.config.model, type(pipe).__name__)
        return (self.config.steps or steps,
                guidance if self.config.guidance_scale is None else float(self.config.guidance_scale))

    def _generate(self, ctx: StageContext, pipe, plan: PromptPlan, seed: int,
                  warnings: list[str]) -> tuple[list, dict[str, Any]]:
        """``num_candidates`` PIL images (seeds seed, seed+1, ...) and the sampling settings used."""
        import inspect

        import torch

        steps, guidance = self._sampling(pipe)
        n = self.config.num_candidates
        total = steps * n
        accepts = inspect.signature(pipe.__call__).parameters
        kwargs: dict[str, Any] = {"prompt": plan.effective, "num_inference_steps": steps, "guidance_scale": guidance,
                                  "width": self.config.width, "height": self.config.height, "output_type": "pil"}
        # Distilled models run without classifier-free guidance, which is what reads the negative prompt.
        if "negative_prompt" in accepts and guidance > 1.0:
            kwargs["negative_prompt"] = plan.negative
        images = []
        for i in range(n):
            done = i * steps

            def on_step(_pipe, step_index, _timestep, tensors, done=done, i=i):
                ctx.progress(STAGE, done + step_index + 1, total,
                             f"candidate {i + 1}/{n} step {step_index + 1}/{steps}" if n > 1 else
                             f"denoising step {step_index + 1}/{steps}")
                return tensors

            # A CPU generator makes the same seed give the same image on every device.
            generator = torch.Generator("cpu").manual_seed(seed + i)
            out = pipe(generator=generator, callback_on_step_end=on_step, **kwargs)
            image = out.images[0]
            if getattr(out, "nsfw_content_detected", None) and out.nsfw_content_detected[0]:
                warnings.append(f"candidate {i + 1}: the model's safety checker blanked the image")
            images.append(image)
        return images, {"steps": steps, "guidance_scale": guidance,
                        "negative_prompt_used": "negative_prompt" in kwargs}

    def _write(self, ctx: StageContext, images: list, plan: PromptPlan, seed: int, used: dict[str, Any]) -> None:
        """Write the chosen image (and candidates), record the settings, hand over to preprocess."""
        best, scores = choose_candidate(images)
        candidates = []
        if len(images) > 1:
            for i, im in enumerate(images):
                candidates.append(ctx.job.save_image(f"prompt_candidate_{i}.png", im).name)
        path = ctx.job.save_image(IMAGE_NAME, images[best])
        if scores[best] == 0.0:
            ctx.state.setdefault("warnings", []).append(
                "the generated image shows no complete object on a plain background; try another seed, "
                "more candidates or a simpler prompt")
        record = {"prompt": plan.raw, "effective_prompt": plan.effective, "negative_prompt": plan.negative,
                  "model": self.config.model, **used, "seed": seed,
                  "width": images[best].width, "height": images[best].height,
                  "truncated": plan.truncated, "num_candidates": len(images), "chosen": best,
                  "candidates": candidates, "foreground_scores": [round(s, 4) for s in scores],
                  "image": path.name}
        ctx.job.update(text_to_image=record)
        ctx.state.update(image_path=str(path), effective_prompt=plan.effective, text_to_image=record)


def _drop_frame_locals(tb) -> None:
    """A traceback keeps diffusers' frames, and through their locals the pipeline's weights, alive
    for as long as the error is kept (job records, a server's failed job). Clear those locals;
    reading ``f_locals`` afterwards also empties the snapshot dict diffusers' ``locals()`` made."""
    inner = tb.tb_next if tb is not None else None  # tb's own frame is the caller, still running
    traceback.clear_frames(inner)
    for frame, _ in traceback.walk_tb(inner):
        frame.f_locals  # noqa: B018 - syncs the cleared fast locals into the cached dict


def release_pipeline(pipe, device: str) -> None:
    """Free the pipeline's memory before the 3D models load (GPU caches emptied on CUDA)."""
    import torch

    try:
        if device == "cuda" and not getattr(pipe, "_offload_gpu_id", None):
            pipe.to("cpu")  # frees VRAM even if something still holds a reference
    except Exception:
        pass
    del pipe
    gc.collect()
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def stage_for_request(request, settings=None, **overrides: Any) -> TextToImageStage:
    """The stage for a GenerateRequest with a prompt (model from the request, else the default;
    device/dtype/model folder from Settings)."""
    values: dict[str, Any] = {"model": request.text_to_image_model or DEFAULT_MODEL}
    if settings is not None:
        values.update(device=settings.device, dtype=settings.dtype, model_dir=str(settings.model_dir))
    values.update(overrides)
    return TextToImageStage(TextToImageConfig(**values))
