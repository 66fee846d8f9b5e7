"""``GET /health``: version, device, the model catalogue (what is available here, each model's licence and
whether it allows commercial use), modes, and whether the server runs every job commercial-only."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orbitmesh import __version__
from orbitmesh.settings import Settings

if TYPE_CHECKING:
    from orbitmesh.models.catalogue import ModelEntry

log = logging.getLogger("orbitmesh.server")

_device_cache: dict[str, Any] = {}
_device_lock = threading.Lock()
DEVICE_TTL_S = 5.0  # free VRAM changes while jobs run; the rest of the probe is static


def device_summary(requested: str) -> dict[str, Any]:
    """The device probe (device, gpu, vram_total_gb, vram_free_gb, ...), cached briefly."""
    from orbitmesh.device import device_info

    with _device_lock:
        hit = _device_cache.get(requested)
        if hit is None or time.monotonic() - hit[0] > DEVICE_TTL_S:
            hit = (time.monotonic(), device_info(requested))
            _device_cache[requested] = hit
        return dict(hit[1])


def model_row(entry: ModelEntry, model_dir: Path) -> dict[str, Any]:
    """One catalogue entry as a /health row; "available" = usable here without a download; "commercial" is
    "yes", "conditional" (then "condition" says who may) or "no"."""
    row = {"name": entry.name, "kind": entry.kind, "available": entry.is_available(model_dir),
           "licence": entry.licence, "hub_id": entry.hub_id, "gated": entry.gated,
           "description": entry.description, "commercial": entry.commercial, "condition": entry.condition,
           "licence_url": entry.licence_url, "size_gb": entry.size_gb}
    if entry.kind == "text_to_image":
        row["default"] = entry.default
    return row


def models_summary(settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
    """(a row per catalogue model, the reconstruction model a job without --model would use: the settings'
    default_model, else the preference order; commercial-only servers skip non-commercial models)."""
    from orbitmesh.errors import ModelError
    from orbitmesh.models import catalogue
    from orbitmesh.models.registry import resolve_lrm_source

    rows = [model_row(entry, settings.model_dir) for entry in catalogue.models()]
    try:
        best = resolve_lrm_source(None, settings.model_dir, commercial_only=settings.commercial_only,
                                  default=settings.default_model).name
    except ModelError:
        best = None
    return rows, best


def modes(models: list[dict[str, Any]]) -> list[str]:
    """'fast' always; 'quality' when a video (SV3D) model of the catalogue is on this machine."""
    quality = any(m["kind"] == "video" and m["available"] for m in models)
    return ["fast", "quality"] if quality else ["fast"]


def health_info(settings: Settings, default_model: str | None) -> dict[str, Any]:
    try:
        models, best = models_summary(settings)
    except Exception as exc:  # health must answer even when the catalogue is broken
        log.warning("model catalogue failed: %s", exc)
        models, best = [], None
    return {"status": "ok", "version": __version__, "device": device_summary(settings.device),
            "models": models, "modes": modes(models), "default_model": default_model or best,
            "commercial_only": settings.commercial_only}
