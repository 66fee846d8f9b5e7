"""The add-on's job list: one record per Generate, persisted as JSON (no bpy here).

Records survive a Blender restart so finished jobs can be re-imported, opened or
regenerated later. Running jobs live in :data:`ACTIVE` (job id -> backend handle);
:func:`request_cancel` is thread-safe and is what the Cancel button and Esc call.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

TERMINAL = ("done", "failed", "cancelled")
MAX_RECORDS = 50

# Settings sent to a backend (GenerateRequest fields minus the source and output).
SETTING_KEYS = ("mode", "model", "seed", "mc_resolution", "target_faces", "texture_size")


@dataclass
class JobRecord:
    id: str
    name: str
    backend: str  # "server" | "inprocess"
    source_kind: str  # "image" | "prompt"
    image_path: str = ""  # the input (a copy inside work_dir for datablocks)
    prompt: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
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
    def from_dict(cls, data: dict[str, Any]) -> "JobRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def new_job_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32].strip("-") or "job"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


class JobList:
    """Records newest first, saved atomically to ``path`` on every status change."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self.records: list[JobRecord] = []
        self.load()

    def load(self) -> None:
        self.records = []
        if self.path is None or not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.records = [JobRecord.from_dict(d) for d in data.get("jobs", [])]
        except (OSError, ValueError, TypeError):
            self.records = []  # a damaged list is not worth an error: start a new one
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


# Running jobs: local job id -> backend handle (see backends.JobHandle).
ACTIVE: dict[str, Any] = {}
_JOBS: JobList | None = None


def job_list() -> JobList:
    global _JOBS
    if _JOBS is None:
        _JOBS = JobList(None)
    return _JOBS


def set_job_list(jobs: JobList | None) -> None:
    global _JOBS
    _JOBS = jobs


def request_cancel(job_id: str = "") -> int:
    """Ask running jobs to stop (all when ``job_id`` is empty); safe from any thread. Returns how many."""
    handles = [h for jid, h in list(ACTIVE.items()) if not job_id or jid == job_id]
    for handle in handles:
        handle.request_cancel()
    return len(handles)
