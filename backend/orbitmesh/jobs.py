"""Job folders: ``<output>/<timestamp>-<slug>/`` with ``job.json`` and atomically written artefacts.

``job.json`` holds everything needed to understand or rerun a job: settings, versions,
seed, status, error, per-stage timings, the list of artefacts and ``worker_pid``, the process
that ran it (a warm worker runs many jobs under one pid).
"""

from __future__ import annotations

import os
import platform
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orbitmesh import __version__, atomic

STATUSES = ("queued", "running", "done", "failed", "cancelled")
TERMINAL = ("done", "failed", "cancelled")  # a job in one of these never changes again
JOB_FILE = "job.json"
# The retry rule, for the server, batches and worker pools alike: a job that was interrupted through no fault of
# its own (a crash or kill of the server, a worker that died) runs again, at most this many runs in all.
MAX_ATTEMPTS = 2


def slugify(text: str, max_len: int = 40) -> str:
    """'My Chair (v2).png' -> 'my-chair-v2-png'; never empty, safe as a folder name."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "job"


def versions() -> dict[str, str]:
    """Versions of Python, OrbitMesh and the core libraries that are already imported/installed."""
    from importlib import metadata

    out = {"orbitmesh": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("torch", "diffusers", "transformers", "numpy", "xatlas", "pymeshlab"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class JobFolder:
    """A job's folder and its ``job.json`` record. Every write is atomic."""

    path: Path
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, output_dir: str | Path, name: str, settings: dict[str, Any] | None = None) -> "JobFolder":
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        # A short random suffix keeps two jobs started in the same second apart.
        path = Path(output_dir) / f"{stamp}-{slugify(name)}-{secrets.token_hex(2)}"
        path.mkdir(parents=True, exist_ok=False)
        job = cls(path, {
            "id": path.name, "name": name, "status": "queued", "created": time.time(),
            "settings": settings or {}, "versions": versions(), "timings": {}, "artefacts": [],
            "error": None, "worker_pid": os.getpid(),
        })
        try:
            job.save()
        except OSError:  # a full or read-only disk: no folder without its job.json
            shutil.rmtree(path, ignore_errors=True)
            raise
        return job

    @classmethod
    def open(cls, path: str | Path) -> "JobFolder":
        import json

        path = Path(path)
        return cls(path, json.loads((path / JOB_FILE).read_text(encoding="utf-8")))

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def status(self) -> str:
        return self.record["status"]

    def save(self) -> None:
        atomic.write_json(self.path / JOB_FILE, self.record)

    def update(self, **values: Any) -> None:
        if "status" in values and values["status"] not in STATUSES:
            raise ValueError(f"unknown job status {values['status']!r}")
        self.record.update(values)
        self.save()

    def artefact(self, name: str) -> Path:
        """Path of an artefact inside the job folder (validated: no folders, no traversal)."""
        if not name or "/" in name or "\\" in name or name.startswith(".") or name == JOB_FILE:
            raise ValueError(f"invalid artefact name {name!r}")
        return self.path / name

    def add_artefact(self, name: str) -> Path:
        """Register an artefact that was written (atomically) into the job folder."""
        if name not in self.record["artefacts"]:
            self.record["artefacts"].append(name)
            self.save()
        return self.artefact(name)

    def write_bytes(self, name: str, data: bytes) -> Path:
        atomic.write_bytes(self.artefact(name), data)
        return self.add_artefact(name)

    def write_json(self, name: str, obj: Any) -> Path:
        atomic.write_json(self.artefact(name), obj)
        return self.add_artefact(name)

    def save_image(self, name: str, image) -> Path:
        """Save a PIL image atomically (format from the name's suffix)."""
        with atomic.atomic_path(self.artefact(name)) as tmp:
            image.save(tmp)
        return self.add_artefact(name)
