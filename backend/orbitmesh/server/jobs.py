"""The server's job queue: FIFO, one worker thread per worker (one GPU; several with a Ray pool), jobs
independent of clients, and a worker that survives anything a job does.

Every job is a folder under the jobs root (``JobFolder``: ``<root>/<id>/job.json`` is the
server's record of it, plus the uploaded image). A worker runs the pipeline with
``output_dir=<root>/<id>/run`` so the pipeline's own job folder (GLB, preprocessed image,
its ``job.json`` with timings) sits inside. A request thread only enqueues and reads;
the workers never depend on a connection, so a client that disconnects loses nothing.

Nothing is lost on a stop: queued jobs stay queued on disk, a stop interrupts the running ones at their next
progress step and leaves them queued, a start queues every unfinished job again in its order, and a job whose
run was cut off twice (or whose worker died twice) fails (:data:`orbitmesh.jobs.MAX_ATTEMPTS`). A disk error
never ends a worker: the job fails with the reason and its record is written once the disk allows.

Changes bump a per-job version under one condition variable; event streams wait on ``on_change``.
"""

from __future__ import annotations

import collections
import logging
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from orbitmesh import atomic
from orbitmesh.errors import DiskError, InputError, JobCancelled, JobInterrupted, OrbitMeshError, WorkerLost, disk_error
from orbitmesh.executors.base import Runner
from orbitmesh.executors.local import run_generate
from orbitmesh.jobs import JOB_FILE, MAX_ATTEMPTS, STATUSES, TERMINAL, JobFolder
from orbitmesh.native import preload_native_libraries
from orbitmesh.pipeline.request import GenerateRequest, GenerateResult, settings_spec
from orbitmesh.progress import ProgressEvent, ProgressTracker
from orbitmesh.server.api_errors import ApiError, bad_request, redact_paths
from orbitmesh.server.limits import JobLimits, check_free_space, estimate_disk_bytes
from orbitmesh.server.model_policy import check_client_models
from orbitmesh.server.retention import Retention, empty_trash, folder_bytes, remove_folder
from orbitmesh.settings import Settings

log = logging.getLogger("orbitmesh.server")

# Settings a client may send: GenerateRequest's settings (the source and local output path are not settings).
CLIENT_SETTINGS = tuple(settings_spec())
RUN_DIR = "run"
# Keys of the record that make up the API's job object (plus "files").
API_KEYS = ("id", "name", "kind", "status", "stage", "step", "total", "message", "eta_s", "progress", "error",
            "settings", "created", "started", "finished", "result", "commercial_only")
GENERATE = "generate"  # the kind of a generation job; other kinds are tasks (a model download) beside the queue
# A task: given the job's tracker (progress, cancel), do the work and return the job's result.
Task = Callable[[ProgressTracker], dict]

COMMERCIAL_ONLY = "commercial_only"  # a per-job key beside the settings: it can only turn the check on


def pop_commercial_only(values: dict[str, Any]) -> bool:
    """Take the client's ``commercial_only`` (true/false) out of its settings; 400 for anything else."""
    asked = values.pop(COMMERCIAL_ONLY, False)
    if not isinstance(asked, bool):
        raise bad_request(f"{COMMERCIAL_ONLY} must be true or false, got {asked!r}",
                          fix=f'send "{COMMERCIAL_ONLY}": true, or leave it out', code="invalid_settings")
    return asked


def build_request(values: dict[str, Any], *, prompt: str | None = None,
                  default_model: str | None = None) -> GenerateRequest:
    """Client settings -> a GenerateRequest whose settings are valid (the source is filled in later);
    400 naming the setting and the fix on anything wrong."""
    values = dict(values)
    if values.get("model") is None and default_model:
        values["model"] = default_model
    try:
        req = GenerateRequest.from_settings(values)
    except InputError as exc:
        raise bad_request(exc.message, fix=exc.fix, code="invalid_settings") from None
    req.prompt = prompt
    return req


# The fix for any disk error of the jobs folder (ENOSPC, EROFS, EACCES), in API errors and failed jobs.
DISK_FIX = ("free disk space on the jobs folder's disk or make it writable (or start the server with another "
            "--output-dir, --keep-jobs or --max-disk-gb)")
INTERRUPTED_TWICE = {"message": "interrupted twice: the server stopped (a crash or a kill) while this job ran, "
                                "on two starts", "fix": "submit it again; if it keeps stopping the server, lower "
                                                        "mc_resolution or texture_size and read the server log"}


@dataclass
class ServerJob:
    folder: JobFolder
    request: GenerateRequest | None = None
    tracker: ProgressTracker = field(default_factory=ProgressTracker)
    version: int = 0
    commercial_only: bool = False  # asked by the client (the server-wide setting applies regardless)
    saved: bool = True  # False while job.json lags the record (a disk error); saving is retried after each job

    @property
    def id(self) -> str:
        return self.folder.id

    @property
    def status(self) -> str:
        return self.folder.record["status"]


class JobManager:
    """Owns every job; one worker thread runs them in submission order and survives anything a job does."""

    def __init__(self, root: str | Path, settings: Settings, *, default_model: str | None = None,
                 runner: Runner = run_generate, limits: JobLimits | None = None, retention: Retention | None = None,
                 allow_model_paths: bool = False, workers: int = 1) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _startup_disk_error(exc, self.root) from None
        self._lock = RootLock(self.root)  # one server per jobs folder: it owns the queued/running records
        if runner is run_generate and threading.current_thread() is threading.main_thread():
            preload_native_libraries()
        self.settings = settings
        self.default_model = default_model
        self.runner = runner
        self.limits = limits or JobLimits()
        self.retention = retention or Retention()
        self.allow_model_paths = allow_model_paths
        self._jobs: dict[str, ServerJob] = {}
        self._queue: collections.deque[ServerJob] = collections.deque()
        self._running: list[ServerJob] = []  # one job per worker thread (several with a Ray pool)
        self._cond = threading.Condition()
        self._stopping = False
        self.worker_restarts = 0
        self.on_change: Callable[[], None] | None = None  # the HTTP layer's wake-up for event streams
        self._load_existing()
        self._prune()
        self._workers = [self._start_worker(i) for i in range(max(1, workers))]

    # ----- submission and queries (request threads) -------------------------------------

    def prepare(self, values: dict[str, Any], *, prompt: str | None = None) -> tuple[GenerateRequest, bool]:
        """Client settings -> (a GenerateRequest with valid settings, commercial_only), every check that needs no
        job folder done: types and ranges, the server's caps and memory budget, which models a client may name,
        the models resolve, licences, the mode is available. A 400 naming the setting and the fix otherwise."""
        values = dict(values)
        commercial_only = pop_commercial_only(values)
        check_client_models(values, self.settings.model_dir, allow_paths=self.allow_model_paths)
        request = build_request(values, prompt=prompt, default_model=self.default_model)
        self.limits.check(request)
        self.check_model(request, commercial_only=commercial_only)
        return request, commercial_only

    def submit(self, request: GenerateRequest, *, name: str, upload: bytes | None = None,
               upload_ext: str = "png", commercial_only: bool = False) -> ServerJob:
        """Create the job folder (and save the upload under a safe name), then enqueue it. 503 while stopping,
        507 when the disk cannot take the job (nothing is left behind)."""
        if self._stopping:
            raise ApiError(503, "shutting_down", "the server is stopping and takes no new jobs",
                           fix="submit the job again once the server has restarted")
        check_free_space(self.root, estimate_disk_bytes(request, len(upload or b"")))
        settings = request.settings()
        if request.prompt is not None:
            settings["prompt"] = request.prompt
        folder = None
        try:
            folder = JobFolder.create(self.root, name, settings=settings)
            if upload is not None:
                upload_name = f"upload.{upload_ext}"
                request.image_path = str(folder.write_bytes(upload_name, upload))
                folder.record["input"] = upload_name
            job = ServerJob(folder, request, commercial_only=self.commercial_only(commercial_only))
            folder.record[COMMERCIAL_ONLY] = job.commercial_only
            self._ensure_worker()
            with self._cond:  # "created" is the moment the job joins the queue: its order is the FIFO order
                folder.update(server=True, created=time.time(), stage=None, step=0, total=0, message="queued",
                              eta_s=None, progress=0.0, started=None, finished=None, result=None, attempts=0)
                self._jobs[job.id] = job
                self._queue.append(job)
                self._touch(job)
        except OSError as exc:
            if folder is not None:
                shutil.rmtree(folder.path, ignore_errors=True)  # no empty or half-written job folder
            error = disk_error(exc, "the jobs folder", DISK_FIX)
            if error is None:
                raise
            raise ApiError(507, "insufficient_storage", error.message, fix=error.fix) from None
        return job

    def start_task(self, kind: str, name: str, task: Task, *, settings: dict | None = None) -> ServerJob:
        """A job that is not a generation (``kind``, e.g. "download"): its own thread at once, beside the GPU
        queue, with the same record, events, cancel and retention as any job. 507 when no folder can be made."""
        if self._stopping:
            raise ApiError(503, "shutting_down", "the server is stopping and takes no new jobs",
                           fix="ask again once the server has restarted")
        try:
            folder = JobFolder.create(self.root, name, settings=settings or {})
            folder.update(server=True, kind=kind, created=time.time(), stage=None, step=0, total=0,
                          message="starting", eta_s=None, progress=0.0, started=time.time(), finished=None,
                          result=None, status="running")
        except OSError as exc:
            error = disk_error(exc, "the jobs folder", DISK_FIX)
            if error is None:
                raise
            raise ApiError(507, "insufficient_storage", error.message, fix=error.fix) from None
        job = ServerJob(folder)
        job.tracker.listener = lambda event: self._on_progress(job, event)
        with self._cond:
            self._jobs[job.id] = job
            self._touch(job)
        threading.Thread(target=self._run_task, args=(job, task), name=f"orbitmesh-{kind}", daemon=True).start()
        return job

    def _run_task(self, job: ServerJob, task: Task) -> None:
        try:
            result = task(job.tracker)
        except JobInterrupted:
            self._finish(job, "failed", error={"message": "the server stopped during this task",
                                               "fix": "start it again (a download resumes where it stopped)"})
        except JobCancelled:
            self._finish(job, "cancelled", error={"message": "cancelled by the user", "fix": None})
        except OrbitMeshError as exc:
            self._finish(job, "failed", error={"message": exc.message, "fix": exc.fix})
        except BaseException as exc:  # noqa: B036 - a bug in a task ends that task, never the server
            log.error("task %s crashed:\n%s", job.id, traceback.format_exc())
            self._finish(job, "failed", error=_bug_error(exc))
        else:
            self._finish(job, "done", result=result)

    def commercial_only(self, asked: bool = False) -> bool:
        """Whether a job runs commercial-only: the server's setting (``serve --commercial-only``, the config
        key or ORBITMESH_COMMERCIAL_ONLY; a client cannot turn it off) or the client's request."""
        return bool(self.settings.commercial_only or asked)

    def check_model(self, request: GenerateRequest, *, commercial_only: bool = False) -> None:
        """Resolve the request's models now (cheap, no loading) so a bad name, a model a commercial job may not
        use or a mode this machine cannot run is a 400 before any job folder exists, not a failed job."""
        from orbitmesh.errors import LicenceError, ModelError
        from orbitmesh.models import catalogue
        from orbitmesh.models.registry import resolve_lrm_source
        from orbitmesh.pipeline.licences import job_licences

        strict = self.commercial_only(commercial_only)
        try:
            source = resolve_lrm_source(request.model, self.settings.model_dir, commercial_only=strict,
                                        default=self.settings.default_model)
            job_licences(request, self.settings, source, commercial_only=strict)
            if request.mode == "quality":
                catalogue.require_available(catalogue.DEFAULTS["video"], self.settings.model_dir,
                                            needed_for="quality mode")
        except LicenceError as exc:
            raise bad_request(exc.message, fix=exc.fix, code="licence_refused") from None
        except ModelError as exc:
            raise bad_request(self.redact(exc.message), fix=self.redact(exc.fix), code="model_unavailable") from None

    def get(self, job_id: str) -> ServerJob:
        with self._cond:
            job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}", fix="list the jobs with GET /jobs")
        return job

    def list(self) -> list[ServerJob]:
        with self._cond:
            jobs = list(self._jobs.values())
        return sorted(jobs, key=lambda j: (j.folder.record.get("created") or 0, j.id), reverse=True)

    @property
    def queue_length(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self._running)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def worker_state(self) -> dict[str, Any]:
        """For /health: whether the worker thread lives (it is restarted if not), what it runs, unsaved records."""
        self._ensure_worker()
        with self._cond:
            unsaved = sum(not job.saved for job in self._jobs.values())
            state = "stopping" if self._stopping else ("running" if self._running else "idle")
            return {"alive": all(w.is_alive() for w in self._workers), "state": state,
                    "job": self._running[0].id if self._running else None, "jobs": [j.id for j in self._running],
                    "workers": len(self._workers), "restarts": self.worker_restarts, "unsaved_records": unsaved}

    def snapshot(self, job: ServerJob) -> tuple[int, dict]:
        """(version, API job object) taken consistently under the lock."""
        with self._cond:
            rec = job.folder.record
            out = {k: rec.get(k) for k in API_KEYS}
            out["kind"] = out["kind"] or GENERATE
            out["error"] = self._api_error(rec.get("error"))
            out["cancel_requested"] = job.tracker.cancelled and rec["status"] == "running"
            version = job.version
        out["files"] = list(self.files(job))
        return version, out

    def version(self, job: ServerJob) -> int:
        with self._cond:
            return job.version

    def wait_change(self, job: ServerJob, seen: int, timeout: float) -> bool:
        """Block until the job's version differs from ``seen`` (True) or ``timeout`` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: job.version != seen or self._stopping, timeout=timeout)

    def cancel(self, job_id: str) -> ServerJob:
        """A queued job is cancelled now; a running one at its next progress step; 409 if finished."""
        job = self.get(job_id)
        with self._cond:
            if job.status in TERMINAL:
                raise ApiError(409, "already_finished", f"job {job_id} is already {job.status}",
                               fix="only queued or running jobs can be cancelled")
            job.tracker.cancel()
            if job.status == "queued":
                if job in self._queue:
                    self._queue.remove(job)
                self._finish(job, "cancelled", error={"message": "cancelled by the user", "fix": None})
            else:
                job.folder.record["message"] = "cancelling"
                self._touch(job)
        return job

    def files(self, job: ServerJob) -> dict[str, Path]:
        """{name: path} of the job's own files: the pipeline's artefacts, then the upload."""
        out: dict[str, Path] = {}
        run = self._run_folder(job)
        for folder, record in ((run, None), (job.folder.path, job.folder.record)):
            if folder is None:
                continue
            try:
                names = (record if record is not None else JobFolder.open(folder).record).get("artefacts") or []
            except (OSError, ValueError):
                continue
            for name in list(names):
                path = folder / name
                if (isinstance(name, str) and name != JOB_FILE and "/" not in name and "\\" not in name
                        and not name.startswith(".") and name not in out
                        and path.is_file() and not path.is_symlink()):
                    out[name] = path
        return out

    def redact(self, text: str | None) -> str | None:
        """``text`` without this machine's paths (API errors never show where the server keeps things)."""
        named = {str(self.root.resolve()): "<jobs>", str(self.root): "<jobs>",
                 str(Path(self.settings.model_dir).expanduser()): "<models>", str(Path.home()): "~"}
        return redact_paths(text, named)

    def _api_error(self, error: Any) -> dict | None:
        """The contract's error object: {message, fix} (the traceback stays in job.json), paths redacted."""
        if not error:
            return None
        if isinstance(error, dict):
            return {"message": self.redact(error.get("message") or str(error)), "fix": self.redact(error.get("fix"))}
        return {"message": self.redact(str(error)), "fix": None}

    # ----- the worker -----------------------------------------------------------------------

    def _start_worker(self, index: int) -> threading.Thread:
        worker = threading.Thread(target=self._work, name=f"orbitmesh-worker-{index}", daemon=True)
        worker.start()
        return worker

    def _ensure_worker(self) -> None:
        """Restart a worker thread that died anyway (each catches everything; this is the second line)."""
        with self._cond:
            if self._stopping:
                return
            for index, worker in enumerate(self._workers):
                if not worker.is_alive():
                    log.error("job worker %d had stopped; restarting it", index)
                    self.worker_restarts += 1
                    self._workers[index] = self._start_worker(index)

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                job = self._queue.popleft()
                self._running.append(job)
            try:
                self._run(job)
            except BaseException as exc:  # noqa: B036 - nothing a job does may end the worker
                log.error("job %s: the worker caught %s:\n%s", job.id, type(exc).__name__, traceback.format_exc())
                self._finish(job, "failed", error=_bug_error(exc))
            finally:
                with self._cond:
                    if job in self._running:
                        self._running.remove(job)
                    self._cond.notify_all()
            try:
                self._after_job()
            except Exception:
                log.exception("cleaning up after job %s failed", job.id)

    def _run(self, job: ServerJob) -> None:
        attempts = int(job.folder.record.get("attempts") or 0) + 1
        _clear_run_folder(job.folder.path / RUN_DIR)  # an interrupted attempt's partial files
        with self._cond:
            job.folder.record.update(status="running", started=time.time(), message="starting", attempts=attempts)
            self._touch(job)
        error = self._save(job)
        if error is not None:  # not even the record can be written: running the job would lose its outputs
            self._finish(job, "failed", error={"message": error.message, "fix": error.fix})
            return
        job.tracker.listener = lambda event: self._on_progress(job, event)
        settings = self.settings.override(output_dir=job.folder.path / RUN_DIR,
                                          commercial_only=self.commercial_only(job.commercial_only))
        try:
            result = self.runner(job.request, settings, job.tracker)
        except JobInterrupted:  # the server stops: the job waits for the next start, this attempt not counted
            with self._cond:
                job.folder.record.update(status="queued", attempts=attempts - 1, stage=None, step=0, total=0,
                                         progress=0.0, eta_s=None, started=None,
                                         message="queued (the server stopped; it runs at the next start)")
                self._touch(job)
            self._save(job)
        except JobCancelled:
            self._finish(job, "cancelled", error={"message": "cancelled by the user", "fix": None})
        except WorkerLost as exc:  # not the job's fault: it runs again (first in line), up to MAX_ATTEMPTS runs
            if attempts >= MAX_ATTEMPTS:
                self._finish(job, "failed", error={"message": f"{exc.message}, on {attempts} runs", "fix": exc.fix})
                return
            with self._cond:
                job.folder.record.update(status="queued", stage=None, step=0, total=0, progress=0.0, eta_s=None,
                                         started=None, message="queued again: the worker running it died")
                job.tracker = ProgressTracker()
                self._queue.appendleft(job)
                self._touch(job)
            self._save(job)
        except OrbitMeshError as exc:
            self._finish(job, "failed", error={"message": exc.message, "fix": exc.fix})
        except OSError as exc:
            disk = disk_error(exc, "the jobs folder", DISK_FIX)
            if disk is None:
                raise
            self._finish(job, "failed", error={"message": disk.message, "fix": disk.fix})
        else:
            self._finish(job, "done", result=_public_result(result))

    def _on_progress(self, job: ServerJob, event: ProgressEvent) -> None:
        with self._cond:
            rec = job.folder.record
            rec.update(stage=event.stage, step=event.step, total=event.total, message=event.message,
                       eta_s=None if event.eta_s is None else round(event.eta_s, 2))
            rec["progress"] = max(rec.get("progress") or 0.0, event.progress)
            self._touch(job)

    def _finish(self, job: ServerJob, status: str, *, error: dict | None = None, result: dict | None = None) -> None:
        """End the job (the record in memory at once, job.json as soon as the disk allows). Never raises."""
        with self._cond:
            rec = job.folder.record
            progress = 1.0 if status == "done" else rec.get("progress")
            stage = None if status == "done" else rec.get("stage")  # failed/cancelled: where it stopped
            rec.update(status=status, error=error, result=result, finished=time.time(), eta_s=None,
                       progress=progress, message=status, stage=stage)
            self._touch(job)
        disk = self._save(job)
        if disk is not None and status == "done":  # its outputs are there, but the folder is not consistent
            with self._cond:
                rec.update(status="failed", message="failed", error={
                    "message": f"the job finished but its record could not be written: {disk.message}",
                    "fix": disk.fix})
                self._touch(job)

    def _save(self, job: ServerJob) -> DiskError | None:
        """Write job.json; on a disk error keep the record in memory (retried later) and return the error."""
        with self._cond:
            record = dict(job.folder.record)
        try:
            atomic.write_json(job.folder.path / JOB_FILE, record)
        except OSError as exc:
            job.saved = False
            log.warning("job %s: cannot write job.json: %s", job.id, exc)
            return disk_error(exc, "the jobs folder", DISK_FIX) or DiskError(
                f"the jobs folder cannot be written ({type(exc).__name__})", fix=DISK_FIX)
        job.saved = True
        return None

    def _after_job(self) -> None:
        """Retry records a disk error kept from job.json, then apply the retention rule."""
        with self._cond:
            unsaved = [job for job in self._jobs.values() if not job.saved]
        for job in unsaved:
            self._save(job)
        self._prune()

    def _prune(self) -> None:
        if not self.retention.active:
            return
        with self._cond:
            finished = [job for job in self._jobs.values() if job.status in TERMINAL and job not in self._running]
            others = [job for job in self._jobs.values() if job not in finished]
        sizes = {job.id: folder_bytes(job.folder.path) for job in finished}
        total = sum(sizes.values()) + sum(folder_bytes(job.folder.path) for job in others)
        rows = [(job.id, job.folder.record.get("finished") or job.folder.record.get("created") or 0.0, sizes[job.id])
                for job in finished]
        for job_id in self.retention.to_remove(rows, total):
            with self._cond:
                job = self._jobs.pop(job_id, None)
            if job is not None:
                try:
                    remove_folder(job.folder.path)
                except OSError as exc:
                    log.warning("could not remove old job %s: %s", job_id, exc)

    def _touch(self, job: ServerJob) -> None:
        job.version += 1
        self._cond.notify_all()
        if self.on_change is not None:
            self.on_change()

    def _run_folder(self, job: ServerJob) -> Path | None:
        """The pipeline's job folder: inside ``run/`` for server jobs, the folder itself otherwise."""
        if not job.folder.record.get("server"):
            return None  # a folder written by `orbitmesh generate`: its own artefacts are listed
        run = job.folder.path / RUN_DIR
        if not run.is_dir():
            return None
        found = sorted(p for p in run.iterdir() if (p / JOB_FILE).is_file())
        return found[0] if found else None

    # ----- startup and shutdown ---------------------------------------------------------

    def _load_existing(self) -> None:
        """List the job folders already in the root; queue the server's unfinished jobs again, in their order
        (a job that was running runs once more; twice interrupted, it fails)."""
        empty_trash(self.root)
        pending = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or not (path / JOB_FILE).is_file():
                continue
            try:
                folder = JobFolder.open(path)
                if folder.record.get("id") != path.name or folder.status not in STATUSES:
                    continue
            except (OSError, ValueError, KeyError):
                log.warning("skipping unreadable job folder %s", path)
                continue
            job = ServerJob(folder, commercial_only=bool(folder.record.get(COMMERCIAL_ONLY)))
            self._jobs[job.id] = job
            if folder.record.get("server") and folder.status not in TERMINAL:
                pending.append(job)
        for job in sorted(pending, key=lambda j: (j.folder.record.get("created") or 0, j.id)):
            self._recover(job)

    def _recover(self, job: ServerJob) -> None:
        rec = job.folder.record
        was_running = rec["status"] == "running"
        if rec.get("kind", GENERATE) != GENERATE:  # a task (a download) is asked for again, not re-run
            self._finish(job, "failed", error={"message": f"the server stopped during this {rec['kind']}",
                                               "fix": "start it again (a download resumes where it stopped)"})
            return
        if was_running and int(rec.get("attempts") or 1) >= MAX_ATTEMPTS:
            self._finish(job, "failed", error=dict(INTERRUPTED_TWICE))
            _end_inner_records(job.folder.path / RUN_DIR, INTERRUPTED_TWICE)
            return
        try:
            job.request = _saved_request(job.folder)
        except OrbitMeshError as exc:
            self._finish(job, "failed", error={"message": f"cannot run again after a restart: {exc.message}",
                                               "fix": "submit the job again"})
            return
        if was_running:  # the interrupted attempt's own record ends too (its files go when the job runs again)
            _end_inner_records(job.folder.path / RUN_DIR, {"message": "interrupted: the server stopped; the job "
                                                                      "runs again", "fix": None})
        rec.update(status="queued", stage=None, step=0, total=0, progress=0.0, eta_s=None, started=None,
                   message="queued again after an interrupted run" if was_running else "queued")
        self._save(job)
        self._queue.append(job)

    def close(self, timeout: float = 30.0) -> None:
        """Stop: take no new jobs; the running job stops at its next progress step and, like every queued job,
        stays queued for the next start (nothing is lost); wait for the worker."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            tasks = [job for job in self._jobs.values()
                     if job.folder.record.get("kind", GENERATE) != GENERATE and job.status == "running"]
            for job in self._running + tasks:
                job.tracker.cancel(JobInterrupted())
            self._cond.notify_all()
        if self.on_change is not None:
            self.on_change()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            unsaved = [job for job in self._jobs.values() if not job.saved]
        for job in unsaved:
            self._save(job)
        self._lock.release()


def _saved_request(folder: JobFolder) -> GenerateRequest:
    """The request of a queued job, from its job.json and upload (after a restart)."""
    settings = dict(folder.record.get("settings") or {})
    prompt = settings.pop("prompt", None)
    request, _notes = GenerateRequest.from_saved(settings)
    request.prompt = prompt
    upload = folder.record.get("input")
    if upload:
        path = folder.path / upload
        if not path.is_file():
            raise InputError(f"its uploaded image {upload} is missing")
        request.image_path = str(path)
    return request


def _clear_run_folder(run: Path) -> None:
    if run.exists():
        shutil.rmtree(run, ignore_errors=True)


def _end_inner_records(run: Path, error: dict) -> None:
    """Mark the pipeline's own job.json files under ``run`` failed when they still say queued/running."""
    if not run.is_dir():
        return
    for path in run.iterdir():
        try:
            inner = JobFolder.open(path)
            if inner.status not in TERMINAL:
                inner.update(status="failed", error=dict(error), finished=time.time())
        except (OSError, ValueError, KeyError):
            continue


def _bug_error(exc: BaseException) -> dict:
    return {"message": f"internal error: {type(exc).__name__}: {exc}",
            "fix": "this is a bug: please report it with the job folder's job.json",
            "traceback": traceback.format_exc(limit=20)}


def _startup_disk_error(exc: OSError, root: Path) -> OrbitMeshError:
    error = disk_error(exc, f"the jobs folder {root}", DISK_FIX)
    return error or InputError(f"cannot create the jobs folder {root}: {exc.strerror or exc}", fix=DISK_FIX)

class RootLock:
    """An exclusive, process-lifetime lock on ``<root>/.serve.lock`` (released by the OS on exit)."""

    def __init__(self, root: Path) -> None:
        self._fh = open(root / ".serve.lock", "a+b")
        try:
            if sys.platform == "win32":
                import msvcrt

                self._fh.seek(0)
                msvcrt.locking(self._fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            raise InputError(f"another orbitmesh serve is using the jobs folder {root}",
                             fix="stop that server, or give this one another --output-dir") from None

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()  # closing the file drops the lock


def _public_result(result: GenerateResult) -> dict:
    """GenerateResult.to_dict() without absolute paths: file names instead."""
    data = result.to_dict()
    data.pop("job_dir", None)
    data["glb"] = Path(data.pop("glb_path")).name
    req = dict(data.get("request") or {})
    for key in ("image_path", "output"):
        if req.get(key):
            req[key] = Path(req[key]).name
    data["request"] = req
    return data
