"""Run a batch: every item through one executor, from ``executor.workers`` threads pulling items in input order.

The model loads once per worker (the executor keeps it), each item's job folder goes under ``OUT_DIR/jobs/`` and
its GLB is copied atomically to ``OUT_DIR/<name>.glb``. A failing item never stops the batch; an item whose
worker died (:class:`~orbitmesh.errors.WorkerLost`) runs again, at most ``1 + retries`` runs. A
KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one by the CLI) stops the batch: running items are cancelled
through their tracker (they stop at their next progress step; a second interrupt stops waiting for them), items
not started are cancelled, batch.json is left with no item queued or running, and the interrupt is re-raised.
"""

from __future__ import annotations

import collections
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from orbitmesh import atomic
from orbitmesh.batch.inputs import BatchItem, check_defaults, collect_items, unique_names
from orbitmesh.batch.record import DISK_FIX, BatchRecord, BatchSummary, read_batch
from orbitmesh.errors import InputError, JobCancelled, OrbitMeshError, WorkerLost, disk_error
from orbitmesh.executors.base import Executor, make_executor
from orbitmesh.jobs import JOB_FILE, MAX_ATTEMPTS
from orbitmesh.progress import ProgressEvent, ProgressTracker
from orbitmesh.settings import Settings

if TYPE_CHECKING:
    from orbitmesh.pipeline.request import GenerateRequest, GenerateResult

JOBS_DIR = "jobs"  # OUT_DIR/jobs/<job folder> per run of an item
RERUN_FIX = "run the same command again: done items are kept, the others run"
STOPPED = {"message": "the batch was stopped before this item finished", "fix": RERUN_FIX}
WAIT_S = 0.1  # how often the main thread looks whether the workers have ended
PROGRESS_STEP = 0.01  # a progress event at most every 1 % of an item (and at each new stage)

# One event: {"event": "batch" | "skipped" | "started" | "progress" | "retry" | "done" | "failed" | "cancelled",
# "name", "status", "progress" (0..1), ...} or {"event": "stopping", "running": [names]}; see :func:`run_batch`.
OnEvent = Callable[[dict[str, Any]], None]


def run_batch(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, settings_values: dict[str, Any], *,
              settings: Settings, ray: str | None = None, workers: int | None = None,
              retries: int = MAX_ATTEMPTS - 1, on_event: OnEvent | None = None,
              executor: Executor | None = None) -> BatchSummary:
    """Generate a GLB for every input into ``out_dir``; returns the summary (batch.json has every item).

    ``inputs``: image files, folders, ``.txt`` prompt lists, ``.csv`` / ``.jsonl`` manifests
    (:mod:`orbitmesh.batch.inputs`). ``settings_values``: generate settings for every item ({name: value}, the
    rest default), a manifest row overrides them. ``settings``: the process settings; job folders go to
    ``out_dir/jobs``. ``ray`` / ``workers``: :func:`orbitmesh.executors.base.make_executor` (None: this
    process), or pass a ready ``executor`` (not closed here). ``on_event``: called with one dict per event,
    never from two threads at once: ``batch`` {total, skipped, out_dir} first, then per item ``skipped``,
    ``started`` {attempt}, ``progress`` {stage}, ``retry`` {attempt, error}, and one of ``done`` {seconds, glb,
    worker} / ``failed`` {seconds, error} / ``cancelled``; each with ``name``, ``status`` and ``progress``; after
    an interrupt ``stopping`` {running: the names being cancelled}.

    Raises InputError (a missing input, a bad manifest, ``retries`` below 0) before anything runs, and
    re-raises KeyboardInterrupt after leaving batch.json consistent.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InputError(f"--retries must be a whole number of at least 0, got {retries!r}",
                         fix=f"e.g. --retries {MAX_ATTEMPTS - 1} (an item whose worker died runs once more)")
    items = collect_items(inputs, check_defaults(settings_values))
    given, out_dir = out_dir, _out_dir(out_dir)
    previous = read_batch(out_dir)
    record = BatchRecord.start(out_dir, items, unique_names(items), previous)
    own = executor is None
    executor = make_executor(ray, workers) if executor is None else executor
    try:
        _make_dir(out_dir, given)
        job_settings = replace(settings, output_dir=out_dir / JOBS_DIR)
        return _Runner(record, items, executor, job_settings, 1 + retries, on_event).run()
    finally:
        if own:
            executor.close()


def _out_dir(out_dir: str | os.PathLike) -> Path:
    """OUT_DIR as an absolute path (jobs may run in other processes); InputError when it is a file."""
    path = Path(out_dir).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise InputError(f"-o {out_dir} is a file, not a folder", fix="give a folder for the GLBs and batch.json")
    return path


def _make_dir(path: Path, out_dir: str | os.PathLike) -> None:
    """Create OUT_DIR (once the executor started: a refused --ray/--workers leaves nothing behind)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error = disk_error(exc, "the output folder", "choose another output folder (-o)")
        if error is not None:
            raise error from exc
        raise InputError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}",
                         fix="choose another output folder (-o)") from None


def _worker_of(executor: Executor, exc: BaseException | None = None) -> str | None:
    """Which worker ran a failed job: the error's, else this process for the local executor."""
    worker = getattr(exc, "worker", None)
    if worker is None and getattr(executor, "name", None) == "local":
        from orbitmesh.executors.local import worker_id

        worker = worker_id()
    return worker


def _find_job(jobs_dir: Path, request_dict: dict[str, Any], since: float) -> Path | None:
    """The newest job folder under ``jobs_dir`` created since ``since`` for this request (a failed job's folder:
    the error does not carry it), or None. Only folders modified since then are read."""
    import json

    best: tuple[float, Path] | None = None
    try:
        folders = [p for p in jobs_dir.iterdir() if p.is_dir() and p.stat().st_mtime >= since - 1]
    except OSError:
        return None
    for folder in folders:
        try:
            record = json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        created = record.get("created") or 0
        if record.get("settings", {}).get("request") == request_dict and created >= since - 1:
            if best is None or created > best[0]:
                best = (created, folder)
    return best[1] if best else None


class _Runner:
    """The threads of one batch over one executor (see the module docstring)."""

    def __init__(self, record: BatchRecord, items: Sequence[BatchItem], executor: Executor, job_settings: Settings,
                 max_attempts: int, on_event: OnEvent | None) -> None:
        self.record, self.items, self.executor = record, items, executor
        self.job_settings, self.max_attempts, self.on_event = job_settings, max_attempts, on_event
        self.queue = collections.deque(i for i, r in enumerate(record.items) if r["status"] == "queued")
        self.trackers: dict[int, ProgressTracker] = {}
        self.stopping = False
        self.fatal: BaseException | None = None  # a worker thread's own failure (batch.json unwritable, a bug)
        self._events = threading.Lock()
        self._shown: dict[int, tuple[str, float]] = {}  # last progress event per item: (stage, progress)

    # ----- the main thread ----------------------------------------------------------------------------------

    def run(self) -> BatchSummary:
        threads = []
        for n in range(min(max(1, int(self.executor.workers)), len(self.queue))):
            ended = threading.Event()
            threads.append((threading.Thread(target=self._work, args=(ended,), name=f"orbitmesh-batch-{n}",
                                             daemon=True), ended))
        try:
            self.record.save()
            self._emit({"event": "batch", "status": "running", "total": len(self.items),
                        "skipped": len(self.record.skipped), "out_dir": str(self.record.out_dir)})
            for index in sorted(self.record.skipped):
                self._emit(self._event(index, "skipped", progress=1.0))
            if threads and getattr(self.executor, "name", None) == "local":
                from orbitmesh.native import preload_native_libraries

                preload_native_libraries()  # generate() in a thread needs these imported on the main thread
            for thread, _ in threads:
                thread.start()
            self._wait(threads)
        except KeyboardInterrupt:
            self._stop()
            try:
                with self.record.lock:
                    running = [r["name"] for r in self.record.items if r["status"] == "running"]
                if running:
                    self._emit({"event": "stopping", "status": "stopping", "running": running})
                self._wait(threads)
            except KeyboardInterrupt:  # a second one: stop waiting for items stuck in a long step
                pass
            self._finish()
            raise
        self._finish()
        if self.fatal is not None:
            raise self.fatal
        return self.record.summary()

    @staticmethod
    def _wait(threads: list[tuple[threading.Thread, threading.Event]]) -> None:
        """Until every started worker thread has ended (set its event). Short sleeps, not Thread.join / is_alive:
        an interrupt inside those can mark a thread ended while it still runs (CPython 3.11, bpo-45274)."""
        while any(thread.ident is not None and not ended.is_set() for thread, ended in threads):
            time.sleep(WAIT_S)

    def _stop(self) -> None:
        """No new item starts; running ones stop at their next progress step."""
        with self.record.lock:
            self.stopping = True
            for tracker in self.trackers.values():
                tracker.cancel()

    def _finish(self) -> None:
        """Items not ended are cancelled, batch.json saved and closed (a repeated interrupt does not cut it short)."""
        for _ in range(5):
            try:
                self.record.finish(STOPPED)
                return
            except KeyboardInterrupt:
                continue

    # ----- the worker threads --------------------------------------------------------------------------------

    def _next(self) -> int | None:
        with self.record.lock:
            return None if self.stopping or not self.queue else self.queue.popleft()

    def _work(self, ended: threading.Event) -> None:
        try:
            while (index := self._next()) is not None:
                self._run_item(index)
        except BaseException as exc:  # noqa: B036 - batch.json unwritable, or a bug: stop; the main thread re-raises
            with self.record.lock:
                self.fatal = self.fatal or exc
            self._stop()
        finally:
            ended.set()

    def _run_item(self, index: int) -> None:
        request = self.items[index].request()
        begun = time.monotonic()
        outcome: dict[str, Any] | None = None
        for attempt in range(1, self.max_attempts + 1):
            tracker = ProgressTracker(listener=lambda event, i=index: self._progress(i, event))
            with self.record.lock:
                if self.stopping:
                    return  # left queued/running: the batch's end marks it cancelled
                self.trackers[index] = tracker
                self.record.update(index, status="running", attempts=attempt, error=None)
            self._emit(self._event(index, "started", attempt=attempt))
            try:
                outcome = self._attempt(index, request, tracker, attempt)
            finally:
                with self.record.lock:
                    self.trackers.pop(index, None)
            if outcome is not None:
                break
        assert outcome is not None
        outcome["seconds"] = round(time.monotonic() - begun, 3)
        if self.record.update(index, **outcome):  # False: the batch already ended (a second Ctrl-C)
            extra = {k: outcome[k] for k in ("seconds", "worker", "error") if outcome.get(k) is not None}
            if outcome.get("glb"):
                extra["glb"] = str(self.record.out_dir / outcome["glb"])
            progress = 1.0 if outcome["status"] == "done" else self._shown.get(index, ("", 0.0))[1]
            self._emit(self._event(index, outcome["status"], progress=progress, **extra))

    def _attempt(self, index: int, request: GenerateRequest, tracker: ProgressTracker,
                 attempt: int) -> dict[str, Any] | None:
        """One run of item ``index``: its record's new values, or None to run it again (its worker died)."""
        since = time.time()
        try:
            result = self.executor.run(request, self.job_settings, tracker)
        except WorkerLost as exc:
            if self.stopping:  # a Ctrl-C reaches the workers too: the item was stopped, it did not fail
                return {"status": "cancelled", "error": STOPPED, "worker": getattr(exc, "worker", None),
                        "job": self._job(request, since)}
            if attempt < self.max_attempts:
                self._emit(self._event(index, "retry", status="queued", attempt=attempt,
                                       error={"message": exc.message, "fix": exc.fix}))
                return None
            tried = f"{attempt} run{'s' if attempt > 1 else ''}"
            return self._failed(index, request, since, exc, {
                "message": f"the worker running this item died ({exc.message}); gave up after {tried}",
                "fix": "a worker was killed or ran out of memory: check the workers (memory, fewer --workers), "
                       f"then {RERUN_FIX}"})
        except JobCancelled as exc:
            return {"status": "cancelled", "error": {"message": exc.message, "fix": RERUN_FIX},
                    "worker": _worker_of(self.executor, exc), "job": self._job(request, since)}
        except OrbitMeshError as exc:
            return self._failed(index, request, since, exc, {"message": exc.message, "fix": exc.fix})
        except Exception as exc:  # a bug: the traceback is in the job's job.json, not in batch.json
            job = self._job(request, since)
            where = f"the traceback is in {Path(job) / JOB_FILE}" if job else "no job folder was written"
            return self._failed(index, request, since, exc, {
                "message": f"{type(exc).__name__}: {exc}",
                "fix": f"this is a bug in OrbitMesh ({where}); please report it"}, job=job)
        return self._deliver(index, result)

    def _failed(self, index: int, request: GenerateRequest, since: float, exc: BaseException, error: dict[str, Any],
                job: str | None = None) -> dict[str, Any]:
        return {"status": "failed", "error": error, "glb": None, "worker": _worker_of(self.executor, exc),
                "job": job or self._job(request, since)}

    def _job(self, request: GenerateRequest, since: float) -> str | None:
        found = _find_job(self.job_settings.output_dir, request.to_dict(), since)
        return str(found) if found else None

    def _deliver(self, index: int, result: GenerateResult) -> dict[str, Any]:
        """Copy the job's GLB to OUT_DIR/<name>.glb (atomically): the item is done."""
        name = self.record.items[index]["name"]
        dest = self.record.out_dir / f"{name}.glb"
        values = {"worker": result.worker, "job": str(result.job_dir), "warnings": list(result.warnings)}
        if self.record.closed:  # the batch already ended: leave OUT_DIR as batch.json describes it
            return {"status": "cancelled", "error": STOPPED, **values}
        try:
            with atomic.atomic_path(dest) as tmp:
                shutil.copyfile(result.glb_path, tmp)
        except OSError as exc:
            error = disk_error(exc, "the output folder", DISK_FIX)
            reason = error.message if error is not None else (exc.strerror or str(exc))
            return {"status": "failed", "glb": None, **values, "error": {
                "message": f"could not write {dest.name} ({reason}); the finished GLB is in the job folder: "
                           f"{result.glb_path}", "fix": DISK_FIX}}
        return {"status": "done", "glb": dest.name, "error": None, **values}

    # ----- events ----------------------------------------------------------------------------------------------

    def _event(self, index: int, event: str, *, status: str | None = None, progress: float = 0.0,
               **extra: Any) -> dict[str, Any]:
        status = status or {"started": "running", "skipped": "done"}.get(event, event)
        return {"event": event, "name": self.record.items[index]["name"], "index": index, "status": status,
                "progress": progress, **extra}

    def _progress(self, index: int, event: ProgressEvent) -> None:
        stage, shown = self._shown.get(index, ("", -1.0))
        if event.stage != stage or event.progress - shown >= PROGRESS_STEP:
            self._shown[index] = (event.stage, event.progress)
            self._emit(self._event(index, "progress", progress=event.progress, stage=event.stage))

    def _emit(self, event: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        with self._events:
            try:
                self.on_event(event)
            except Exception:  # a display that fails (a closed pipe) must not fail the items: no more events
                self.on_event = None
