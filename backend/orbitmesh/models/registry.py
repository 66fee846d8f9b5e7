"""Known models, and resolving a ``--model`` argument to a loaded LRM.

A model argument is a known name (``vfusion3d``, ``tiny-random``), a hub id
(``facebook/vfusion3d``), a folder (config.json + model.safetensors) or a weights file.
``None`` means the best model available: a real model already in ``settings.model_dir``
(``<model_dir>/vfusion3d/`` or the hub cache under ``<model_dir>/hub``); without one the
error says how to get it. Nothing is downloaded unless a hub id/name is asked for, and the
licence is shown first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orbitmesh.errors import ModelError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str  # "lrm" or "video"
    description: str
    hub_id: str | None = None
    files: tuple[str, ...] = ()
    license: str | None = None
    license_url: str | None = None
    gated: bool = False  # the hub asks for a licence click-through and a token
    preset: str | None = None  # LRM config preset
    available: bool = True  # False: listed for the future, cannot be loaded yet

    def license_notice(self) -> str:
        if not self.license:
            return ""
        url = f" ({self.license_url})" if self.license_url else ""
        gated = " Gated on the hub: accept the licence on its page and log in (huggingface-cli login)." \
            if self.gated else ""
        return f"{self.name} ({self.hub_id}) is licensed {self.license}{url}.{gated}"


MODELS: dict[str, ModelInfo] = {
    "vfusion3d": ModelInfo(
        "vfusion3d", "lrm", "VFusion3D (Meta): the released image-to-3D LRM, DINOv2-base + 16x1024 transformer",
        hub_id="facebook/vfusion3d", files=("model.safetensors", "config.json"),
        license="CC-BY-NC 4.0 (non-commercial use only)",
        license_url="https://creativecommons.org/licenses/by-nc/4.0/", preset="vfusion3d"),
    "tiny-random": ModelInfo(
        "tiny-random", "lrm", "plumbing check, not a model: a tiny LRM with fixed random weights (blobby shapes), "
        "runs end to end on a CPU in seconds", preset="tiny"),
    "orbitmesh-preview": ModelInfo(
        "orbitmesh-preview", "lrm", "bundled preview model: a small LRM trained on procedural shapes (simple, "
        "low fidelity; ships inside the package, used when no real model is installed)"),
    # Filled in by the video model's loader (orbitmesh.models.video).
    "sv3d_u": ModelInfo(
        "sv3d_u", "video", "SV3D_u (Stability AI): 21 orbit views at a fixed elevation",
        hub_id="stabilityai/sv3d", files=("sv3d_u.safetensors",),
        license="Stability AI Community License", license_url="https://huggingface.co/stabilityai/sv3d",
        gated=True),
    "sv3d_p": ModelInfo(
        "sv3d_p", "video", "SV3D_p (Stability AI): 21 orbit views along a given camera path",
        hub_id="stabilityai/sv3d", files=("sv3d_p.safetensors",),
        license="Stability AI Community License", license_url="https://huggingface.co/stabilityai/sv3d",
        gated=True),
}

# Real LRMs in order of preference for model=None; without one, the bundled preview model.
DEFAULT_LRMS = ("vfusion3d",)
PREVIEW = "orbitmesh-preview"
_preview_noticed = threading.Event()


def preview_model_dir() -> Path:
    """The bundled preview model (config.json + model.safetensors) inside the package."""
    return Path(__file__).resolve().parents[1] / "weights" / PREVIEW


@dataclass(frozen=True)
class LRMSource:
    """Where an LRM comes from, resolved without loading anything."""

    name: str  # what job.json records
    kind: str  # "tiny-random", "path" or "hub"
    location: str  # folder/file path or hub id
    info: ModelInfo | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.location}"


def hub_cache_dir(model_dir: Path) -> Path:
    return Path(model_dir) / "hub"


def _weights_in(folder: Path) -> bool:
    from orbitmesh.models.lrm.loading import WEIGHT_NAMES

    return folder.is_dir() and any((folder / n).is_file() for n in WEIGHT_NAMES)


def _cached_hub_file(hub_id: str, model_dir: Path) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    hit = try_to_load_from_cache(hub_id, "model.safetensors", cache_dir=str(hub_cache_dir(model_dir)))
    return isinstance(hit, str)


def how_to_get_models(model_dir: Path) -> str:
    info = MODELS["vfusion3d"]
    return (f"download VFusion3D with `orbitmesh generate IMAGE --model {info.name}` (fetches {info.hub_id}; "
            f"licence {info.license}), or put its model.safetensors in {Path(model_dir) / info.name}, or pass "
            f"--model PATH; `--model tiny-random` checks the pipeline without a real model")


def resolve_lrm_source(model: str | None, model_dir: str | Path) -> LRMSource:
    """Decide where the LRM comes from (cheap: no loading, no network)."""
    model_dir = Path(model_dir).expanduser()
    if model is None:
        for name in DEFAULT_LRMS:
            info = MODELS[name]
            if _weights_in(model_dir / name):
                return LRMSource(name, "path", str(model_dir / name), info)
            if info.hub_id and _cached_hub_file(info.hub_id, model_dir):
                return LRMSource(name, "hub", info.hub_id, info)
        if _weights_in(preview_model_dir()):  # the bundled preview model: always there unless removed
            return LRMSource(PREVIEW, "path", str(preview_model_dir()), MODELS[PREVIEW])
        raise ModelError(f"no reconstruction model found in {model_dir}", fix=how_to_get_models(model_dir))
    if not isinstance(model, str) or not model.strip():
        raise ModelError("the model argument is empty", fix="give a model name, hub id, folder or file")
    if model in MODELS:
        info = MODELS[model]
        if info.kind != "lrm":
            raise ModelError(f"{model} is a {info.kind} model, not a reconstruction model", fix="use --model vfusion3d")
        if not info.available:
            raise ModelError(f"{model} is not available yet", fix=how_to_get_models(model_dir))
        if model == "tiny-random":
            return LRMSource(model, "tiny-random", model, info)
        if model == PREVIEW:
            if not _weights_in(preview_model_dir()):
                raise ModelError(f"the bundled preview model is missing from {preview_model_dir()}",
                                 fix="reinstall orbitmesh, or train it: `orbitmesh train configs/preview.toml`")
            return LRMSource(model, "path", str(preview_model_dir()), info)
        if _weights_in(model_dir / model):
            return LRMSource(model, "path", str(model_dir / model), info)
        return LRMSource(model, "hub", info.hub_id, info)
    path = Path(model).expanduser()
    if path.exists():
        return LRMSource(str(path), "path", str(path))
    for info in MODELS.values():
        if info.hub_id == model and info.kind == "lrm":
            return LRMSource(info.name, "hub", model, info)
    if "/" in model and not path.suffix and len(model.split("/")) == 2:
        return LRMSource(model, "hub", model)
    raise ModelError(f"model not found: {model}",
                     fix=f"use a known name ({', '.join(n for n, i in MODELS.items() if i.kind == 'lrm' and i.available)}),"
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
               f"geometry; for real objects {how_to_get_models(model_dir)}")
    if source.kind == "tiny-random":
        model = tiny_random_lrm()
        return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    if source.kind == "hub" and notify is not None and source.info is not None and source.info.license:
        notify(source.info.license_notice())
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


def resolve_lrm(model: str | None, settings=None, *, device: str | None = None, dtype=None,
                local_files_only: bool = False, notify: Callable[[str], None] | None = None):
    """Resolve a model argument to a loaded LRM (``None`` = best available). Returns (model, name)."""
    from orbitmesh.device import resolve_device, resolve_dtype
    from orbitmesh.settings import load_settings

    settings = settings or load_settings()
    device = device or resolve_device(settings.device)
    source = resolve_lrm_source(model, settings.model_dir)
    dtype = dtype if dtype is not None else resolve_dtype(settings.dtype, device)
    lrm = load_lrm(source, model_dir=settings.model_dir, device=device, dtype=dtype,
                   local_files_only=local_files_only, notify=notify)
    return lrm, source.name
