"""Resolving a ``--model`` argument to a reconstruction model (LRM), and loading it.

The models themselves (hub ids, files, licences, availability) are listed in
:mod:`orbitmesh.models.catalogue`. A model argument is a known name (``vfusion3d``,
``triposr``, ``tiny-random``), a hub id (``facebook/vfusion3d``), a folder (config.json +
model.safetensors, or TripoSR's config.yaml + model.ckpt) or a weights file. ``None`` means the
configured ``default_model`` if there is one, else the best model available: the first real model of
:data:`~orbitmesh.models.catalogue.LRM_PREFERENCE` already in ``settings.model_dir`` (``<model_dir>/<name>/``
or the hub cache under ``<model_dir>/hub``); without one the bundled preview model, else an error that
says how to get one. Nothing is downloaded unless a hub id/name is asked for, and the licence is shown
first.

``commercial_only`` (see :func:`orbitmesh.models.catalogue.check_commercial_use`): a model whose licence
does not allow commercial use (or is unknown) is refused here, before anything loads, with a fix naming
one that does; the default resolution skips such models, and when one was skipped and no allowed real
model is installed it is an error naming TripoSR rather than a silent fall-back to the toy preview model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orbitmesh.errors import LicenceError, ModelError
from orbitmesh.models.catalogue import (
    CATALOGUE,
    DEFAULTS,
    LRM_PREFERENCE,
    LRM_WEIGHT_NAMES,
    ModelEntry,
    check_commercial_use,
    hub_cache_dir,
    identify,
    models,
    unknown_licence,
)

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
    architecture: str = "vfusion3d"  # the model class that loads it: a key of catalogue.ARCHITECTURES
    notice: str | None = None  # said once when it loads (the bundled preview model: how to get a real one)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.location}"

    def licence_record(self) -> dict[str, str | None]:
        """{name, licence, commercial, condition} of this model ("unknown" outside the catalogue)."""
        return self.info.licence_record() if self.info is not None else unknown_licence(self.name)


def _weights_in(folder: Path) -> bool:
    return folder.is_dir() and any((folder / n).is_file() for n in LRM_WEIGHT_NAMES)


def _how_to_get(model_dir: Path, commercial_only: bool = False) -> str:
    """How to get a real reconstruction model: the first of the preference order this job may use."""
    allowed = [n for n in LRM_PREFERENCE if not commercial_only or CATALOGUE[n].commercial != "no"]
    return CATALOGUE[allowed[0] if allowed else DEFAULTS["lrm"]].how_to_get(model_dir)


def _architecture(path: Path, info: ModelEntry | None) -> str:
    """The model class of a local model: the catalogue's word, else TripoSR for either of its folder
    layouts (released config.yaml + model.ckpt, or our save_pretrained), else the VFusion3D family."""
    from orbitmesh.models.triposr.config import folder_layout

    if info is not None and info.architecture:
        return info.architecture
    folder = path if path.is_dir() else path.parent
    return "triposr" if folder_layout(folder) is not None else "vfusion3d"


def _source(name: str, kind: str, location: str, info: ModelEntry | None, commercial_only: bool,
            notice: str | None = None) -> LRMSource:
    """An LRMSource, refused under ``commercial_only`` when its licence does not allow commercial use."""
    if commercial_only:
        check_commercial_use("lrm", name, info)  # raises for "no"/unknown; a condition is warned about per job
    architecture = _architecture(Path(location), info) if kind == "path" else (
        info.architecture if info is not None and info.architecture else "vfusion3d")
    return LRMSource(name, kind, location, info, architecture=architecture, notice=notice)


def _installed(info: ModelEntry, model_dir: Path) -> tuple[str, str] | None:
    """(kind, location) of a catalogue LRM on this machine (model folder first, then the hub cache), or None."""
    local = info.source.local_path(model_dir)
    if local is not None:
        return "path", str(local)
    if info.hub_id and info.cached_file(model_dir) is not None:
        return "hub", info.hub_id
    return None


def _preview_notice(model_dir: Path, commercial_only: bool) -> str:
    return (f"using the bundled preview model ({PREVIEW}): trained on simple procedural shapes, so expect rough "
            f"geometry; for real objects {_how_to_get(model_dir, commercial_only)}")


def _resolve_default(model_dir: Path, commercial_only: bool) -> LRMSource:
    """model=None: the first installed model of LRM_PREFERENCE (commercial_only: of those allowed), else the
    bundled preview model."""
    skipped = []
    for name in LRM_PREFERENCE:
        info = CATALOGUE[name]
        found = _installed(info, model_dir)
        if found is None:
            continue
        if commercial_only and info.commercial == "no":
            skipped.append(info)
            continue
        return _source(name, *found, info, commercial_only)
    if skipped:  # a studio with only non-commercial models installed: say so rather than fall back to a toy
        names = ", ".join(f"{e.name} ({e.licence})" for e in skipped)
        raise LicenceError(f"commercial use only: the reconstruction models installed in {model_dir} do not "
                           f"allow commercial use: {names}",
                           fix=f"{_how_to_get(model_dir, True)}; or pass --model {PREVIEW} for the bundled "
                               "preview model (Apache-2.0, rough shapes)")
    if _weights_in(preview_model_dir()):  # the bundled preview model: always there unless removed
        return _source(PREVIEW, "path", str(preview_model_dir()), CATALOGUE[PREVIEW], commercial_only,
                       _preview_notice(model_dir, commercial_only))
    raise ModelError(f"no reconstruction model found in {model_dir}", fix=_how_to_get(model_dir, commercial_only))


def resolve_lrm_source(model: str | None, model_dir: str | Path, *, commercial_only: bool = False,
                       default: str | None = None) -> LRMSource:
    """Decide where the LRM comes from (cheap: no loading, no network).

    ``default``: the model to use when ``model`` is None (``Settings.default_model``); without one the
    preference order of the catalogue. ``commercial_only``: refuse a model whose licence does not allow
    commercial use (ModelError naming one that does), skip such models when choosing the default.
    """
    model_dir = Path(model_dir).expanduser()
    if model is None and default:
        model = default
    if model is None:
        return _resolve_default(model_dir, commercial_only)
    if not isinstance(model, str) or not model.strip():
        raise ModelError("the model argument is empty", fix="give a model name, hub id, folder or file")
    if model in CATALOGUE:
        info = CATALOGUE[model]
        if info.kind != "lrm":
            raise ModelError(f"{model} is a {info.kind} model, not a reconstruction model",
                             fix=f"use --model {DEFAULTS['lrm']}")
        if info.source.builtin:
            return _source(model, "tiny-random", model, info, commercial_only)
        if model == PREVIEW:
            if not _weights_in(preview_model_dir()):
                raise ModelError(f"the bundled preview model is missing from {preview_model_dir()}",
                                 fix=info.how_to_get(model_dir))
            return _source(model, "path", str(preview_model_dir()), info, commercial_only,
                           _preview_notice(model_dir, commercial_only))
        local = info.source.local_path(model_dir)
        if local is not None:
            return _source(model, "path", str(local), info, commercial_only)
        return _source(model, "hub", str(info.hub_id), info, commercial_only)
    path = Path(model).expanduser()
    if not path.exists() and _is_folder_name(model) and (model_dir / model).exists():
        path = model_dir / model  # a bare name: a model folder inside the model folder
    if path.exists():
        info = identify("lrm", str(path), model_dir)  # a catalogue model's own folder keeps its name and licence
        return _source(info.name if info else str(path), "path", str(path), info, commercial_only)
    for info in models("lrm"):
        if info.hub_id == model:
            return _source(info.name, "hub", model, info, commercial_only)
    if "/" in model and not path.suffix and len(model.split("/")) == 2:
        return _source(model, "hub", model, None, commercial_only)
    raise ModelError(f"model not found: {model}",
                     fix=f"use a known name ({', '.join(i.name for i in models('lrm'))}),"
                         " a hub id, a model folder or a .safetensors/.pth file")


def _is_folder_name(name: str) -> bool:
    """One plain path segment ('my-finetune'): no separators, not '.'/'..', not '~'."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\:~")


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

    if source.notice and notify is not None and not _preview_noticed.is_set():
        _preview_noticed.set()  # said once per process
        notify(source.notice)
    if source.kind == "tiny-random":
        model = tiny_random_lrm()
        return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    if source.kind == "hub" and notify is not None and source.info is not None and source.info.licence:
        notify(source.info.licence_notice())
    cache = hub_cache_dir(Path(model_dir).expanduser()) if source.kind == "hub" else None
    if source.architecture == "triposr":
        from orbitmesh.models.triposr import TripoSR

        return TripoSR.from_pretrained(source.location, local_files_only=local_files_only, cache_dir=cache,
                                       device=device, dtype=dtype, progress=notify).eval()
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


def release_cached_lrm() -> bool:
    """Forget the cached LRM so its memory can be freed (an idle worker); True when one was held."""
    with _cache_lock:
        held = bool(_cache)
        _cache.clear()
    return held
