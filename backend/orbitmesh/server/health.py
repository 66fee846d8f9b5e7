"""``GET /health``: version, device (doctor-style), models known and available, modes."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import time
from typing import Any

from orbitmesh import __version__
from orbitmesh.settings import Settings

log = logging.getLogger("orbitmesh.server")

_device_cache: dict[str, Any] = {}
_device_lock = threading.Lock()
DEVICE_TTL_S = 5.0  # free VRAM changes while jobs run; the rest of the probe is static


def device_summary(requested: str) -> dict[str, Any]:
    """doctor's device info (device, gpu, vram_total_gb, vram_free_gb, ...), cached briefly."""
    from orbitmesh.cli.doctor import device_info

    with _device_lock:
        hit = _device_cache.get(requested)
        if hit is None or time.monotonic() - hit[0] > DEVICE_TTL_S:
            hit = (time.monotonic(), device_info(requested))
            _device_cache[requested] = hit
        return dict(hit[1])


def models_summary(settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
    """([{name, kind, available, licence}], best available model name) from the model registry."""
    if importlib.util.find_spec("orbitmesh.models.registry") is None:
        return [], None
    registry = importlib.import_module("orbitmesh.models.registry")
    return registry_models(registry, settings)


def registry_models(registry, settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
    """Rows for the LRM/video registry and the text-to-image models; "available" = usable here, offline."""
    from orbitmesh.errors import ModelError

    model_dir = settings.model_dir
    rows = []
    for info in registry.MODELS.values():
        rows.append({"name": info.name, "kind": info.kind, "available": _present(registry, info, model_dir),
                     "licence": info.license, "hub_id": info.hub_id, "gated": info.gated,
                     "description": info.description})
    try:
        best = registry.resolve_lrm_source(None, model_dir).name
    except ModelError:
        best = None
    if importlib.util.find_spec("orbitmesh.pipeline.text_to_image") is not None:
        from orbitmesh.pipeline.text_to_image import list_text_to_image_models

        for row in list_text_to_image_models(model_dir):
            rows.append({"name": row["id"], "kind": "text_to_image", "available": bool(row["available"]),
                         "licence": row["licence"], "hub_id": row["id"], "gated": False,
                         "description": row.get("note") or row.get("family"), "default": row.get("default")})
    return rows, best


def _present(registry, info, model_dir) -> bool:
    """Loadable without a download: built in (tiny-random), in the model folder, or in the hub cache."""
    if not info.available:
        return False
    if info.hub_id is None:
        return True  # built from code (the tiny-random plumbing model)
    folder = model_dir / info.name
    if any((folder / f).is_file() or (model_dir / f).is_file() for f in info.files if f.endswith(
            (".safetensors", ".pth", ".pt", ".ckpt"))):
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    weights = [f for f in info.files if not f.endswith(".json")] or ["model.safetensors"]
    cache = str(registry.hub_cache_dir(model_dir))
    return all(isinstance(try_to_load_from_cache(info.hub_id, f, cache_dir=cache), str) for f in weights)


def modes(models: list[dict[str, Any]]) -> list[str]:
    """'fast' always; 'quality' when the orbit (SV3D) stage exists and a video model is on this machine."""
    quality = (importlib.util.find_spec("orbitmesh.pipeline.orbit") is not None
               and any(m["kind"] == "video" and m["available"] for m in models))
    return ["fast", "quality"] if quality else ["fast"]


def health_info(settings: Settings, default_model: str | None) -> dict[str, Any]:
    try:
        models, best = models_summary(settings)
    except Exception as exc:  # health must answer even when the registry is broken
        log.warning("model registry failed: %s", exc)
        models, best = [], None
    return {"status": "ok", "version": __version__, "device": device_summary(settings.device),
            "models": models, "modes": modes(models), "default_model": default_model or best}
