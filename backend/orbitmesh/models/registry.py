"""Resolving a ``--model`` argument to a reconstruction model (LRM), and loading it.

The models themselves (hub ids, files, licences, availability) are listed in
:mod:`orbitmesh.models.catalogue`. A model argument is a known name (``vfusion3d``,
``tiny-random``), a hub id (``facebook/vfusion3d``), a folder (config.json + model.safetensors)
or a weights file. ``None`` means the best model available: a real model already in
``settings.model_dir`` (``<model_dir>/vfusion3d/`` or the hub cache under ``<model_dir>/hub``);
without one the bundled preview model, else an error that says how to get one. Nothing is
downloaded unless a hub id/name is asked for, and the licence is shown first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orbitmesh.errors import ModelError
from orbitmesh.models.catalogue import CATALOGUE, DEFAULTS, LRM_WEIGHT_NAMES, ModelEntry, hub_cache_dir, models

# Real LRMs in order of preference for model=None; without one, the bundled preview model.
DEFAULT_LRMS = (DEFAULTS["lrm"],)
PREVIEW = "orbitmesh-preview"
_preview_noticed = threading.Event()


def preview_model_dir() -> Path:
    """The bundled preview model (config.json + model.safetensors) inside the package."""
    path = CATALOGUE[PREVIEW].source.bundled_path()
    assert path is not None
    return path


@dataclass(frozen=True)
class LRMSource:
    """Where an LRM comes from, resolved without loading anything."""

    name: str  # what job.json records
    kind: str  # "tiny-random", "path" or "hub"
    location: str  # folder/file path or hub id
    info: ModelEntry | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.location}"


def _weights_in(folder: Path) -> bool:
    return folder.is_dir() and any((folder / n).is_file() for n in LRM_WEIGHT_NAMES)


def _how_to_get(model_dir: Path) -> str:
    return CATALOGUE[DEFAULTS["lrm"]].how_to_get(model_dir)


def resolve_lrm_source(model: str | None, model_dir: str | Path) -> LRMSource:
    """Decide where the LRM comes from (cheap: no loading, no network)."""
    model_dir = Path(model_dir).expanduser()
    if model is None:
        for name in DEFAULT_LRMS:
            info = CATALOGUE[name]
            local = info.source.local_path(model_dir)
            if local is not None:
                return LRMSource(name, "path", str(local), info)
            if info.hub_id and info.cached_file(model_dir) is not None:
                return LRMSource(name, "hub", info.hub_id, info)
        if _weights_in(preview_model_dir()):  # the bundled preview model: always there unless removed
            return LRMSource(PREVIEW, "path", str(preview_model_dir()), CATALOGUE[PREVIEW])
        raise ModelError(f"no reconstruction model found in {model_dir}", fix=_how_to_get(model_dir))
    if not isinstance(model, str) or not model.strip():
        raise ModelError("the model argument is empty", fix="give a model name, hub id, folder or file")
    if model in CATALOGUE:
        info = CATALOGUE[model]
        if info.kind != "lrm":
            raise ModelError(f"{model} is a {info.kind} model, not a reconstruction model",
                             fix=f"use --model {DEFAULTS['lrm']}")
        if info.source.builtin:
            return LRMSource(model, "tiny-random", model, info)
        if model == PREVIEW:
            if not _weights_in(preview_model_dir()):
                raise ModelError(f"the bundled preview model is missing from {preview_model_dir()}",
                                 fix=info.how_to_get(model_dir))
            return LRMSource(model, "path", str(preview_model_dir()), info)
        local = info.source.local_path(model_dir)
        if local is not None:
            return LRMSource(model, "path", str(local), info)
        return LRMSource(model, "hub", str(info.hub_id), info)
    path = Path(model).expanduser()
    if path.exists():
        return LRMSource(str(path), "path", str(path))
    for info in models("lrm"):
        if info.hub_id == model:
            return LRMSource(info.name, "hub", model, info)
    if "/" in model and not path.suffix and len(model.split("/")) == 2:
        return LRMSource(model, "hub", model)
    raise ModelError(f"model not found: {model}",
                     fix=f"use a known name ({', '.join(i.name for i in models('lrm'))}),"
                         " a hub id, a model folder or a .safetensors/.pth file")


def tiny_random_lrm(seed: int = 0):
    """The ``tiny-random`` plumbing model: the tiny config, weights drawn from a fixed seed (identical every time)."""
    import torch

    from orbitmesh.models.lrm import LRM, tiny

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LRM(tiny())
    return model.eval()


def load_lrm(source: LRMSource, *, model_dir: str | Path, device: str = "cpu", dtype=None,
             local_files_only: bool = False, notify: Callable[[str], None] | None = None):
    """Load the LRM a source points at (downloading a hub model when allowed; licence shown first)."""
    from orbitmesh.models.lrm import LRM

    if source.name == PREVIEW and notify is not None and not _preview_noticed.is_set():
        _preview_noticed.set()  # said once per process
        notify(f"using the bundled preview model ({PREVIEW}): trained on simple procedural shapes, so expect rough "
               f"geometry; for real objects {_how_to_get(Path(model_dir))}")
    if source.kind == "tiny-random":
        model = tiny_random_lrm()
        return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    if source.kind == "hub" and notify is not None and source.info is not None and source.info.licence:
        notify(source.info.licence_notice())
    cache = hub_cache_dir(Path(model_dir).expanduser()) if source.kind == "hub" else None
    from orbitmesh.models.lrm.loading import from_pretrained

    model = from_pretrained(source.location, local_files_only=local_files_only, dtype=dtype, device=device,
                            cache_dir=cache, progress=notify)
    assert isinstance(model, LRM)
    return model


# One loaded LRM is kept between jobs (the server and the add-on run many jobs per process).
_cache_lock = threading.Lock()
_cache: dict[tuple, object] = {}


def cached_lrm(source: LRMSource, *, model_dir: str | Path, device: str, dtype, local_files_only: bool = False,
               notify: Callable[[str], None] | None = None):
    key = (source.key, str(device), str(dtype))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        _cache.clear()  # free the previous model before loading another
        model = load_lrm(source, model_dir=model_dir, device=device, dtype=dtype,
                         local_files_only=local_files_only, notify=notify)
        _cache[key] = model
        return model
