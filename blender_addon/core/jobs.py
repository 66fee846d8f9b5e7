"""The add-on's job list: one record per Generate, persisted as JSON (no bpy here).

Records survive a Blender restart so finished jobs can be re-imported, opened or regenerated
later, also when an earlier add-on version wrote the list: unknown keys are dropped with a
warning, missing settings take their defaults (:func:`.settings.from_saved`). What a record turns
into lives here too: the arguments that regenerate it and the metadata its imported object carries.
Running jobs and the current list are session state (:mod:`.session`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..contract import TERMINAL
from . import settings as contract_settings
from .manifest import ADDON_VERSION

MAX_RECORDS = 50


@dataclass
class JobRecord:
    id: str
    name: str
    backend: str  # "server" | "inprocess"
    source_kind: str  # "image" | "prompt"
    image_path: str = ""  # the input (a copy inside work_dir for datablocks)
    prompt: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # a full settings dict (see .settings)
    size: float = 1.0
    status: str = "submitting"  # submitting|queued|running|done|failed|cancelled
    stage: str = ""
    message: str = ""
    progress: float = 0.0
    eta_s: float | None = None
    error: dict[str, Any] | None = None
    work_dir: str = ""  # the add-on's folder for this job (downloads, logs)
    job_dir: str = ""  # the pipeline's job folder when it is on this machine
    glb_path: str = ""
    preview_path: str = ""
    remote_id: str = ""
    version: str = ""
    model: str = ""  # the model the backend actually used
    licences: dict[str, Any] = field(default_factory=dict)  # {kind: {name, licence, commercial, ...}} it used
    object_name: str = ""
    created: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def folder(self) -> str:
        """The folder 'Open Folder' shows: the pipeline's job folder if local, else the add-on's."""
        return self.job_dir if self.job_dir and os.path.isdir(self.job_dir) else self.work_dir

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> tuple["JobRecord", list[str]]:
        """A record as saved by this or an earlier version: unknown keys dropped, settings made current
        (see :func:`.settings.from_saved`). Returns (record, notes saying what was dropped or defaulted);
        raises TypeError/ValueError when a required key (id, name, backend, source_kind) is missing."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        notes = [f"ignored unknown job fields {unknown} (written by another version)"] if unknown else []
        kept = {k: v for k, v in data.items() if k in known}
        saved = kept.get("settings")
        kept["settings"], setting_notes = contract_settings.from_saved(saved if isinstance(saved, dict) else {})
        if not isinstance(kept.get("licences", {}), dict):
            kept["licences"] = {}
        return cls(**kept), notes + setting_notes


def regenerate_kwargs(rec: JobRecord) -> dict[str, Any]:
    """``bpy.ops.orbitmesh.generate`` arguments that repeat ``rec`` (same source, settings and seed);
    an empty setting is left out, so the operator's default (the backend's) applies."""
    kw: dict[str, Any] = {"size": rec.size}
    if rec.source_kind == "prompt":
        kw["prompt"] = rec.prompt
    else:
        kw["image_path"] = rec.image_path
    for name in contract_settings.NAMES:
        if rec.settings.get(name) not in (None, ""):
            kw[name] = rec.settings[name]
    return kw


# From the most to the least restrictive: what a job's output may be used for is its least free model's word.
COMMERCIAL_ORDER = ("no", "unknown", "conditional", "yes")


def licence_summary(licences: dict[str, Any]) -> str:
    """One line naming each model a job used and its licence: 'triposr: MIT; sv3d_p: Stability AI ...'."""
    parts = []
    for record in licences.values():
        if isinstance(record, dict) and record.get("name"):
            parts.append(f"{record['name']}: {record.get('licence') or 'unknown'}")
    return "; ".join(parts)


def commercial_use(licences: dict[str, Any]) -> str:
    """Whether a job's output may be used commercially: the most restrictive "commercial" of its models
    ("no", "unknown", "conditional" or "yes"); "" when the backend did not say (an older backend)."""
    values = [r.get("commercial") for r in licences.values() if isinstance(r, dict)]
    ranked = [v for v in COMMERCIAL_ORDER if v in values]
    return ranked[0] if ranked else ("unknown" if values else "")


def object_metadata(rec: JobRecord) -> dict[str, Any]:
    """What an imported object carries as ``orbitmesh_*`` custom properties (``orbitmesh_licence``: the
    licences of the models the job used, ``orbitmesh_commercial``: whether the object may be used
    commercially, ``orbitmesh_licences``: the backend's full record)."""
    return {"job_id": rec.id, "backend": rec.backend, "source": rec.source_kind,
            "image": rec.image_path, "prompt": rec.prompt, "seed": int(rec.settings.get("seed", 0)),
            "model": rec.model or rec.settings.get("model") or "",
            "mode": rec.settings.get("mode", ""), "version": rec.version or "", "addon_version": ADDON_VERSION,
            "job_dir": rec.job_dir or rec.work_dir, "remote_id": rec.remote_id, "size": rec.size,
            "settings": rec.settings, "licence": licence_summary(rec.licences),
            "commercial": commercial_use(rec.licences), "licences": rec.licences}


def new_job_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32].strip("-") or "job"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


class JobList:
    """Records newest first, saved atomically to ``path`` on every status change.

    ``warnings`` says what loading had to change in a list written by another version (also
    printed to the console, where Blender users look for add-on messages).
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self.records: list[JobRecord] = []
        self.warnings: list[str] = []
        self.load()

    def load(self) -> None:
        self.records, self.warnings = [], []
        if self.path is None or not self.path.is_file():
            return
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8")).get("jobs", [])
        except (OSError, ValueError, AttributeError):
            saved = []  # a damaged list is not worth an error: start a new one
        notes: Counter[str] = Counter()
        for data in saved if isinstance(saved, list) else []:
            try:
                rec, rec_notes = JobRecord.from_saved(data)
            except (TypeError, ValueError, AttributeError):
                notes["skipped a job record that cannot be read"] += 1
                continue
            notes.update(rec_notes)
            self.records.append(rec)
        self.warnings = [f"{self.path.name}: {note}" + (f" ({n} jobs)" if n > 1 else "")
                         for note, n in notes.items()]
        for warning in self.warnings:
            print(f"OrbitMesh: {warning}")
        for rec in self.records:  # a job cut off by quitting Blender is no longer running
            if not rec.terminal:
                rec.status, rec.message = "failed", "interrupted (Blender was closed)"
                rec.error = {"message": "the job was interrupted when Blender closed", "fix": "regenerate it"}

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            data = {"jobs": [asdict(r) for r in self.records[:MAX_RECORDS]]}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".jobs.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, indent=1)
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def add(self, record: JobRecord) -> JobRecord:
        self.records.insert(0, record)
        del self.records[MAX_RECORDS:]
        self.save()
        return record

    def get(self, job_id: str) -> JobRecord | None:
        return next((r for r in self.records if r.id == job_id), None)

    def remove(self, job_id: str) -> None:
        self.records = [r for r in self.records if r.id != job_id]
        self.save()

    def clear_finished(self) -> None:
        self.records = [r for r in self.records if not r.terminal]
        self.save()
