"""Loading a diffusers text-to-image pipeline: from a hub id, the hub cache or a local folder.

Any diffusers text-to-image pipeline works (``AutoPipelineForText2Image``: SD 1.x/2.x, SDXL,
SD3, Flux, PixArt, ...). The known models, their licences and sampling defaults are in
:mod:`orbitmesh.models.catalogue` (kind ``text_to_image``); the stage that runs a pipeline in a
job is :mod:`orbitmesh.pipeline.text_to_image`. Nothing heavy is imported at module import.
"""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path
from typing import Any, Iterator

from orbitmesh.errors import ModelError
from orbitmesh.models.catalogue import (
    CATALOGUE,
    DEFAULTS,
    DIFFUSERS_INDEX,
    diffusers_how_to_get,
    diffusers_source,
    hub_caches,
    models,
)

DEFAULT_MODEL = DEFAULTS["text_to_image"]

# Words in a model's name that mark a distilled few-step model (no classifier-free guidance).
_DISTILLED = ("turbo", "lightning", "hyper", "schnell", "lcm", "flash")
# Defaults by pipeline class for models not in the catalogue: (steps, guidance).
_CLASS_DEFAULTS = {"StableDiffusionXLPipeline": (30, 6.0), "StableDiffusion3Pipeline": (28, 7.0),
                   "FluxPipeline": (28, 3.5), "PixArtAlphaPipeline": (20, 4.5), "PixArtSigmaPipeline": (20, 4.5)}


def model_family_defaults(model: str, pipeline_class: str | None = None) -> tuple[int, float]:
    """(steps, guidance_scale) for a model: the catalogue, a distilled-name rule, the pipeline class."""
    model = str(model or "").replace("\\", "/").rstrip("/")
    for known in models("text_to_image"):  # a hub id, or a folder named like one (.../stabilityai/sdxl-turbo)
        if (model == known.name or model.endswith("/" + known.name)) and known.text_to_image is not None:
            return known.text_to_image.steps, known.text_to_image.guidance_scale
    name = model.rsplit("/", 1)[-1].lower()
    if any(word in name for word in _DISTILLED):
        return 4, 0.0
    return _CLASS_DEFAULTS.get(pipeline_class or "", (30, 7.5))


def find_local_model(model: str, model_dir: str | os.PathLike | None = None) -> Path | None:
    """A local diffusers folder for ``model`` (a folder path, or a hub id under the model folder,
    in ``<model_dir>/hub`` or in the user's hub cache), or None. Never touches the network."""
    path = Path(model).expanduser()
    if (path / DIFFUSERS_INDEX).is_file():
        return path
    if path.is_absolute() or model.startswith((".", "~", "\\")) or model.count("/") > 1 or not model.strip():
        return None  # a folder without a pipeline, not a hub id
    source = CATALOGUE[model].source if model in CATALOGUE else diffusers_source(model)
    if model_dir is not None and "/" in model:
        local = source.local_path(model_dir)
        if local is not None:
            return local
    for cache in hub_caches("text_to_image", model_dir):
        hit = source.cached_file(cache)
        if hit is not None:
            return hit.parent
    return None


def how_to_get(model: str, model_dir: str | os.PathLike | None) -> str:
    """The fix for a text-to-image model that is not on this machine (its licence first when known)."""
    return diffusers_how_to_get(model, model_dir, CATALOGUE.get(model))


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

    Called only when a prompt job runs; ``device`` None leaves it on the CPU. Downloads only when
    ``local_files_only`` is False and the model is not on disk; any failure is a ModelError naming
    the model, its licence and how to put it into the model folder.
    """
    local = find_local_model(path_or_repo, model_dir)
    looks_like_path = (Path(path_or_repo).expanduser().is_dir() or path_or_repo.startswith((".", "~", "/", "\\"))
                       or (len(path_or_repo) > 1 and path_or_repo[1] == ":"))
    if local is None and looks_like_path:
        raise ModelError(f"text-to-image model folder {path_or_repo} is not a diffusers pipeline "
                         f"(no {DIFFUSERS_INDEX})", fix="point to a folder written by save_pretrained or hf download")
    if local is None and (local_files_only or _hub_offline()):
        raise ModelError(f"text-to-image model {path_or_repo} is not on this machine (offline mode)",
                         fix=how_to_get(path_or_repo, model_dir))
    if local is None and not _hub_reachable():
        # Checked up front: the hub client would otherwise retry for most of a minute.
        raise ModelError(f"text-to-image model {path_or_repo} is not on this machine and the Hugging Face hub "
                         "is unreachable", fix=how_to_get(path_or_repo, model_dir))
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
                         + (f": {first[0]}" if first else ""), fix=how_to_get(path_or_repo, model_dir)) from errors[0]
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
