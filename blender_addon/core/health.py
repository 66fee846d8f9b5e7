"""What the panel shows about a backend, from its ``/health`` answer (or the subprocess probe's)."""

from __future__ import annotations

from typing import Any

from . import settings as contract_settings
from .errors import report_text


def available_models(data: dict[str, Any]) -> list[str]:
    return [str(m.get("name") or "") for m in data.get("models") or [] if isinstance(m, dict) and m.get("available")]


# How the status line marks a model whose licence limits commercial use (a /health row's "commercial").
COMMERCIAL_MARKS = {"no": "non-commercial", "conditional": "conditional licence"}


def model_labels(data: dict[str, Any]) -> list[str]:
    """The available models, each with its licence's limit on commercial use: 'vfusion3d (non-commercial)'."""
    labels = []
    for m in data.get("models") or []:
        if isinstance(m, dict) and m.get("available"):
            mark = COMMERCIAL_MARKS.get(str(m.get("commercial")))
            labels.append(str(m.get("name") or "") + (f" ({mark})" if mark else ""))
    return labels


def status_line(backend_name: str, data: dict[str, Any]) -> str:
    """'Server 0.1.0 | cuda RTX (10/24 GB free) | models: a, b (non-commercial) | queue 0': a doctor-style
    one-liner (plus 'commercial use only' when the backend runs every job so)."""
    dev = data.get("device") or {}
    device = str(dev.get("device") or "?")
    if dev.get("gpu"):
        device += f" {dev['gpu']}"
    if dev.get("vram_total_gb") is not None:
        device += f" ({dev.get('vram_free_gb', '?')}/{dev['vram_total_gb']} GB free)"
    models = model_labels(data)
    parts = [("Server " if backend_name == "server" else "In Blender: orbitmesh ") + str(data.get("version", "?")),
             device, f"models: {', '.join(models) if models else 'none found'}"]
    if data.get("commercial_only"):
        parts.append("commercial use only")
    if backend_name == "server":
        parts.append(f"queue {data.get('queue_length', 0)}" + (" (busy)" if data.get("busy") else ""))
    return " | ".join(parts)


def panel_values(backend_name: str, data: dict[str, Any] | None, error: BaseException | None) -> dict[str, Any]:
    """The OrbitMeshState fields a check sets: status_ok, status_line, modes (comma-separated) and, after
    a successful check, models and default_model."""
    if error is not None or data is None:
        message = getattr(error, "message", None) or str(error or "no answer")
        # Not knowing what the backend offers, the panel enables every mode; the backend has the last word.
        return {"status_ok": False, "status_line": report_text(message, getattr(error, "fix", None)),
                "modes": ",".join(contract_settings.choice_values("mode"))}
    return {"status_ok": True, "status_line": status_line(backend_name, data),
            "modes": ",".join(data.get("modes") or [contract_settings.BY_NAME["mode"]["default"]]),
            "models": ",".join(available_models(data)), "default_model": str(data.get("default_model") or "")}
