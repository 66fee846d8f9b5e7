"""``OUT_DIR/batch.json``: every item's state, saved atomically after each change, and what a rerun may keep.

::

    {"version": 1, "started": 1764490000.1, "finished": 1764490042.7 | null,
     "summary": {"total": 5, "done": 4, "failed": 1, "cancelled": 0, "skipped": 2, "seconds": 42.6},
     "items": [{"name": "chair", "input": {"image": "/abs/chair.png"} | {"prompt": "a lamp"},
                "key": "<sha256>", "settings": {every generate setting}, "status": "done", "glb": "chair.glb",
                "error": null | {"message", "fix"}, "seconds": 3.1, "worker": "local:host:pid",
                "attempts": 1, "job": "/abs/OUT_DIR/jobs/<job folder>" | null, "warnings": [...]}, ...]}

``status`` is ``queued`` / ``running`` only while the batch runs; a finished or stopped batch leaves each item
``done``, ``failed`` or ``cancelled``. ``key`` hashes the input's content (the image's bytes, or the prompt) and
the item's settings: a rerun keeps (skips) an item that is ``done`` with the same name and key whose GLB is
still in OUT_DIR (:func:`reusable`). ``glb`` is relative to OUT_DIR.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from orbitmesh import atomic
from orbitmesh.batch.inputs import BatchItem
from orbitmesh.errors import InputError, disk_error

FORMAT_VERSION = 1
BATCH_FILE = "batch.json"
ACTIVE = ("queued", "running")  # only while the batch runs
ITEM_STATES = ("done", "failed", "cancelled")  # how an item ends
DISK_FIX = "free disk space or choose another output folder (-o), then run the same command again"


def item_key(item: BatchItem) -> str:
    """sha256 of the item's input content (image bytes, or the prompt) and its settings. An image that cannot
    be read hashes its path instead (it fails when it runs, and is never kept)."""
    digest = hashlib.sha256()
    if item.image is not None:
        digest.update(b"image\0")
        try:
            with open(item.image, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError:
            digest.update(f"unreadable:{item.image}".encode())
    else:
        digest.update(b"prompt\0" + str(item.prompt).encode())
    digest.update(b"\0" + json.dumps(item.settings, sort_keys=True).encode())
    return digest.hexdigest()


def read_batch(out_dir: Path) -> dict[str, Any] | None:
    """The batch.json in ``out_dir``, or None when there is none. Raises InputError when it is not ours to read."""
    path = out_dir / BATCH_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} cannot be read ({exc})",
                         fix="delete it (the batch then runs every item again) or choose another -o folder") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise InputError(f"{path} is not a batch record", fix="delete it or choose another -o folder")
    return data


def reusable(previous: dict[str, Any] | None, out_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """{(name, key): record} of the previous run's items that a rerun keeps: done, GLB still in ``out_dir``."""
    keep = {}
    for record in (previous or {}).get("items", []):
        if not isinstance(record, dict) or record.get("status") != "done" or not record.get("glb"):
            continue
        name, key = record.get("name"), record.get("key")
        if isinstance(name, str) and isinstance(key, str) and (out_dir / f"{name}.glb").is_file():
            keep[(name, key)] = record
    return keep


def new_record(item: BatchItem, name: str, key: str) -> dict[str, Any]:
    return {"name": name, "input": item.input(), "key": key, "settings": dict(item.settings), "status": "queued",
            "glb": None, "error": None, "seconds": None, "worker": None, "attempts": 0, "job": None, "warnings": []}


@dataclass
class BatchSummary:
    """How a batch ended (or stands): counts, wall time of this run, and every item's record (batch.json)."""

    out_dir: Path
    total: int
    done: int  # kept (skipped) items included
    failed: int
    cancelled: int
    skipped: int  # done in an earlier run, kept
    seconds: float
    items: list[dict[str, Any]] = field(default_factory=list)
    kept: set[str] = field(default_factory=set)  # names of the skipped items, when known (this run)

    @property
    def ok(self) -> bool:
        """Every item done."""
        return self.done == self.total

    def counts(self) -> dict[str, Any]:
        """batch.json's ``summary``."""
        return {"total": self.total, "done": self.done, "failed": self.failed, "cancelled": self.cancelled,
                "skipped": self.skipped, "seconds": round(self.seconds, 3)}

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` line: the counts, where the results are, and one row per item."""
        rows = [{**{key: record.get(key) for key in ("name", "status", "seconds", "worker", "glb", "error")},
                 "skipped": record.get("name") in self.kept} for record in self.items]
        return {**self.counts(), "out_dir": str(self.out_dir), "batch_json": str(self.out_dir / BATCH_FILE),
                "items": rows}

    @classmethod
    def from_batch(cls, out_dir: Path, data: dict[str, Any], kept: set[str] | None = None) -> "BatchSummary":
        items = list(data.get("items", []))
        count = {state: sum(1 for r in items if r.get("status") == state) for state in ITEM_STATES}
        saved = data.get("summary") or {}
        seconds = (data.get("finished") or time.time()) - (data.get("started") or time.time())
        skipped = saved.get("skipped", 0) if kept is None else len(kept)
        return cls(out_dir, len(items), count["done"], count["failed"], count["cancelled"], skipped, seconds, items,
                   set(kept or ()))


def read_summary(out_dir: str | Path) -> BatchSummary | None:
    """The summary of the batch.json in ``out_dir`` (e.g. after an interrupted run), or None when there is none."""
    out_dir = Path(out_dir)
    data = read_batch(out_dir)
    return None if data is None else BatchSummary.from_batch(out_dir, data)


class BatchRecord:
    """batch.json in memory. Thread-safe: ``lock`` guards every change (hold it for a check-then-change); each
    change is saved atomically before it returns. After :meth:`finish` the record is closed: changes are dropped."""

    def __init__(self, out_dir: Path, items: list[dict[str, Any]], skipped: set[int]) -> None:
        self.out_dir = out_dir
        self.path = out_dir / BATCH_FILE
        self.items = items
        self.skipped = skipped
        self.started = time.time()
        self.finished: float | None = None
        self.lock = threading.RLock()
        self.closed = False

    @classmethod
    def start(cls, out_dir: Path, items: Sequence[BatchItem], names: Sequence[str],
              previous: dict[str, Any] | None) -> "BatchRecord":
        """A record of ``items`` (named ``names``): queued, or kept from ``previous`` (:func:`reusable`); not saved
        yet (the caller saves it where an interrupt is handled)."""
        keep = reusable(previous, out_dir)
        records, skipped = [], set()
        for index, (item, name) in enumerate(zip(items, names)):
            key = item_key(item)
            old = keep.pop((name, key), None)
            if old is not None:
                skipped.add(index)
                records.append({**new_record(item, name, key), **old, "input": item.input(), "status": "done"})
            else:
                records.append(new_record(item, name, key))
        return cls(out_dir, records, skipped)

    def update(self, index: int, **values: Any) -> bool:
        """Change item ``index`` and save; False (nothing changed) once the record is closed."""
        with self.lock:
            if self.closed:
                return False
            self.items[index].update(values)
            self.save()
            return True

    def status(self, index: int) -> str:
        with self.lock:
            return self.items[index]["status"]

    def finish(self, error: dict[str, str] | None = None) -> None:
        """End the batch: any item still queued or running becomes ``cancelled`` (with ``error``), ``finished`` is
        set, the record is saved and closed."""
        with self.lock:
            for record in self.items:
                if record["status"] in ACTIVE:
                    record.update(status="cancelled", error=error)
            self.finished = time.time()
            self.save()
            self.closed = True

    def summary(self) -> BatchSummary:
        with self.lock:
            return BatchSummary.from_batch(self.out_dir, self.to_dict(), kept=self._kept())

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            data = {"version": FORMAT_VERSION, "started": self.started, "finished": self.finished,
                    "summary": {}, "items": [dict(r) for r in self.items]}
            data["summary"] = BatchSummary.from_batch(self.out_dir, data, kept=self._kept()).counts()
            return data

    def _kept(self) -> set[str]:
        return {self.items[i]["name"] for i in self.skipped}

    def save(self) -> None:
        """Write batch.json atomically; a full or read-only disk is a DiskError."""
        with self.lock:
            try:
                atomic.write_json(self.path, self.to_dict())
            except OSError as exc:
                error = disk_error(exc, "the batch folder", DISK_FIX)
                if error is None:
                    raise
                raise error from exc
