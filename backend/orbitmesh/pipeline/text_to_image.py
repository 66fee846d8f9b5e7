"""Prompt -> image: the text-to-image stage in front of the image pipeline.

Any diffusers text-to-image pipeline works (``AutoPipelineForText2Image``: SD 1.x/2.x,
SDXL, SD3, Flux, PixArt, ...), from a hub id, the hub cache, or a local folder written by
``save_pretrained`` / ``hf download --local-dir``. Nothing is loaded at import or at
construction: the stage loads the pipeline in ``run``, makes the image(s), writes
``prompt_image.png`` into the job folder, points ``state.image_path`` at it for the
preprocess stage and releases the pipeline before the 3D models load.

Default model: ``stabilityai/sdxl-turbo`` (distilled SDXL: 4 steps, no guidance, 512x512,
about 7 GB of fp16 weights; fits 12 GB GPUs, 8 GB ones with ``offload``). Its licence (Stability
AI Community License) allows commercial use only below a revenue threshold:
:mod:`orbitmesh.models.catalogue` lists it and the alternatives, ``orbitmesh doctor`` prints them. Loading lives in
:mod:`orbitmesh.models.text_to_image`.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from typing import Any

from orbitmesh.errors import InputError
from orbitmesh.models.text_to_image import DEFAULT_MODEL, from_pretrained, model_family_defaults, release_pipeline
from orbitmesh.pipeline import modes
from orbitmesh.pipeline.orchestrator import StageContext
from orbitmesh.pipeline.prompting import PROMPT_TEMPLATE, PromptPlan, build_prompt, validate_prompt
from orbitmesh.settings import DEVICES, DTYPES

STAGE = modes.TEXT_TO_IMAGE
IMAGE_NAME = "prompt_image.png"


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
    """Stage ``text_to_image``: ``state.prompt`` + ``state.seed`` -> ``prompt_image.png``.

    Sets ``state.image_path`` (the preprocess stage takes over from there), ``state.effective_prompt``
    and appends warnings; records the prompts and settings in job.json under ``text_to_image``.
    """

    name = STAGE
    needs = ("prompt",)
    gives = ("image_path", "effective_prompt", "text_to_image")

    def __init__(self, config: TextToImageConfig | None = None) -> None:
        self.config = config or TextToImageConfig()

    def run(self, ctx: StageContext) -> None:
        cfg = self.config.validate()
        validate_prompt(ctx.state.prompt)  # fail before loading gigabytes of weights
        seed = ctx.state.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise InputError(f"seed must be a whole number from 0 to 2**32-1, got {seed!r}", fix="pass e.g. 42")
        ctx.progress(STAGE, 0, 1, f"loading {cfg.model}")
        from orbitmesh.device import resolve_device, resolve_dtype

        device = resolve_device(cfg.device)
        pipe = from_pretrained(cfg.model, local_files_only=cfg.local_files_only,
                               dtype=resolve_dtype(cfg.dtype, device), model_dir=cfg.model_dir)
        warnings = ctx.state.warnings
        try:
            self._place(pipe, device, warnings)
            tokenizers = [t for t in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)) if t]
            plan = build_prompt(ctx.state.prompt, tokenizers, template=cfg.template, negative=cfg.negative_prompt)
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
            ctx.state.warn(
                "the generated image shows no complete object on a plain background; try another seed, "
                "more candidates or a simpler prompt")
        record = {"prompt": plan.raw, "effective_prompt": plan.effective, "negative_prompt": plan.negative,
                  "model": self.config.model, **used, "seed": seed,
                  "width": images[best].width, "height": images[best].height,
                  "truncated": plan.truncated, "num_candidates": len(images), "chosen": best,
                  "candidates": candidates, "foreground_scores": [round(s, 4) for s in scores],
                  "image": path.name}
        ctx.job.update(text_to_image=record)
        ctx.state.image_path, ctx.state.effective_prompt, ctx.state.text_to_image = str(path), plan.effective, record


def _drop_frame_locals(tb) -> None:
    """A traceback keeps diffusers' frames, and through their locals the pipeline's weights, alive
    for as long as the error is kept (job records, a server's failed job). Clear those locals;
    reading ``f_locals`` afterwards also empties the snapshot dict diffusers' ``locals()`` made."""
    inner = tb.tb_next if tb is not None else None  # tb's own frame is the caller, still running
    traceback.clear_frames(inner)
    for frame, _ in traceback.walk_tb(inner):
        frame.f_locals  # noqa: B018 - syncs the cleared fast locals into the cached dict


def stage_for_request(request, settings=None, **overrides: Any) -> TextToImageStage:
    """The stage for a GenerateRequest with a prompt (model from the request, else the default;
    device/dtype/model folder from Settings)."""
    values: dict[str, Any] = {"model": request.text_to_image_model or DEFAULT_MODEL}
    if settings is not None:
        values.update(device=settings.device, dtype=settings.dtype, model_dir=str(settings.model_dir))
    values.update(overrides)
    return TextToImageStage(TextToImageConfig(**values))
