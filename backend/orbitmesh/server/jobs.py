"""The server's job queue: FIFO, one worker thread (one GPU), jobs independent of clients.

Every job is a folder under the jobs root (``JobFolder``: ``<root>/<id>/job.json`` is the
server's record of it, plus the uploaded image). The worker runs the pipeline with
``output_dir=<root>/<id>/run`` so the pipeline's own job folder (GLB, preprocessed image,
its ``job.json`` with timings) sits inside. A request thread only enqueues and reads;
the worker never depends on a connection, so a client that disconnects loses nothing.

Changes bump a per-job version under one condition variable; the SSE handler waits on it.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from orbitmesh.errors import InputError, JobCancelled, OrbitMeshError
from orbitmesh.jobs import JOB_FILE, TERMINAL, JobFolder
from orbitmesh.native import preload_native_libraries
from orbitmesh.pipeline.request import GenerateRequest, GenerateResult, settings_spec
from orbitmesh.progress import ProgressEvent, ProgressTracker
from orbitmesh.server.api_errors import ApiError, bad_request
from orbitmesh.settings import Settings

log = logging.getLogger("orbitmesh.server")

# Settings a client may send: GenerateRequest's settings (the source and local output path are not settings).
CLIENT_SETTINGS = tuple(settings_spec())
RUN_DIR = "run"
# Keys of the record that make up the API's job object (plus "files").
API_KEYS = ("id", "name", "status", "stage", "step", "total", "message", "eta_s", "progress", "error",
            "settings", "created", "started", "finished", "result", "commercial_only")

Runner = Callable[[GenerateRequest, Settings, ProgressTracker], GenerateResult]


def run_generate(request: GenerateRequest, settings: Settings, tracker: ProgressTracker) -> GenerateResult:
    """The real pipeline (imported when the first job runs: torch stays out of startup)."""
    from orbitmesh.pipeline.generate import generate

    return generate(request, settings=settings, progress=tracker)


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


@dataclass
class ServerJob:
    folder: JobFolder
    request: GenerateRequest | None = None
    tracker: ProgressTracker = field(default_factory=ProgressTracker)
    version: int = 0
    commercial_only: bool = False  # asked by the client (the server-wide setting applies regardless)

    @property
    def id(self) -> str:
        return self.folder.id

    @property
    def status(self) -> str:
        return self.folder.record["status"]


class JobManager:
    """Owns every job; one worker thread runs them in submission order."""

    def __init__(self, root: str | Path, settings: Settings, *, default_model: str | None = None,
                 runner: Runner = run_generate) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = RootLock(self.root)  # one server per jobs folder: it owns the queued/running records
        if runner is run_generate and threading.current_thread() is threading.main_thread():
            preload_native_libraries()
        self.settings = settings
        self.default_model = default_model
        self.runner = runner
        self._jobs: dict[str, ServerJob] = {}
        self._queue: collections.deque[ServerJob] = collections.deque()
        self._running: ServerJob | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._load_existing()
        self._worker = threading.Thread(target=self._work, name="orbitmesh-gpu-worker", daemon=True)
        self._worker.start()

    # ----- submission and queries (request threads) -------------------------------------

    def submit(self, request: GenerateRequest, *, name: str, upload: bytes | None = None,
               upload_ext: str = "png", commercial_only: bool = False) -> ServerJob:
        """Create the job folder (and save the upload under a safe name), then enqueue it."""
        settings = request.settings()
        if request.prompt is not None:
            settings["prompt"] = request.prompt
        folder = JobFolder.create(self.root, name, settings=settings)
        if upload is not None:
            upload_name = f"upload.{upload_ext}"
            request.image_path = str(folder.write_bytes(upload_name, upload))
            folder.record["input"] = upload_name
        job = ServerJob(folder, request, commercial_only=self.commercial_only(commercial_only))
        folder.record[COMMERCIAL_ONLY] = job.commercial_only
        with self._cond:
            # "created" is the moment the job joins the queue, so its order is the FIFO order.
            folder.update(server=True, created=time.time(), stage=None, step=0, total=0, message="queued",
                          eta_s=None, progress=0.0, started=None, finished=None, result=None)
            self._jobs[job.id] = job
            self._queue.append(job)
            self._touch(job)
        return job

    def commercial_only(self, asked: bool = False) -> bool:
        """Whether a job runs commercial-only: the server's setting (``serve --commercial-only``, the config
        key or ORBITMESH_COMMERCIAL_ONLY; a client cannot turn it off) or the client's request."""
        return bool(self.settings.commercial_only or asked)

    def check_model(self, request: GenerateRequest, *, commercial_only: bool = False) -> None:
        """Resolve the request's models now (cheap, no loading) so a bad name or a model a commercial job may
        not use is a 400 before any job folder exists, not a failed job."""
        from orbitmesh.errors import LicenceError, ModelError
        from orbitmesh.models.registry import resolve_lrm_source
        from orbitmesh.pipeline.licences import job_licences

        strict = self.commercial_only(commercial_only)
        try:
            source = resolve_lrm_source(request.model, self.settings.model_dir, commercial_only=strict,
                                        default=self.settings.default_model)
            job_licences(request, self.settings, source, commercial_only=strict)
        except LicenceError as exc:
            raise bad_request(exc.message, fix=exc.fix, code="licence_refused") from None
        except ModelError as exc:
            raise bad_request(exc.message, fix=exc.fix, code="model_unavailable") from None

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
            return self._running is not None

    def snapshot(self, job: ServerJob) -> tuple[int, dict]:
        """(version, API job object) taken consistently under the lock."""
        with self._cond:
            rec = job.folder.record
            out = {k: rec.get(k) for k in API_KEYS}
            out["error"] = _api_error(rec.get("error"))
            out["cancel_requested"] = job.tracker.cancelled and rec["status"] == "running"
            version = job.version
        out["files"] = list(self.files(job))
        return version, out

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

    # ----- the worker -----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                job = self._queue.popleft()
                self._running = job
                job.folder.update(status="running", started=time.time(), message="starting")
                self._touch(job)
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    def _run(self, job: ServerJob) -> None:
        job.tracker.listener = lambda event: self._on_progress(job, event)
        settings = self.settings.override(output_dir=job.folder.path / RUN_DIR,
                                          commercial_only=self.commercial_only(job.commercial_only))
        try:
            result = self.runner(job.request, settings, job.tracker)
        except JobCancelled:
            self._finish(job, "cancelled", error={"message": "cancelled by the user", "fix": None})
        except OrbitMeshError as exc:
            self._finish(job, "failed", error={"message": exc.message, "fix": exc.fix})
        except Exception as exc:  # a bug: keep serving, keep the traceback for the report
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            self._finish(job, "failed", error={
                "message": f"internal error: {type(exc).__name__}: {exc}",
                "fix": "this is a bug: please report it with the job folder's job.json",
                "traceback": traceback.format_exc(limit=20)})
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
        with self._cond:
            rec = job.folder.record
            progress = 1.0 if status == "done" else rec.get("progress")
            message = {"done": "done", "cancelled": "cancelled", "failed": "failed"}[status]
            stage = None if status == "done" else rec.get("stage")  # failed/cancelled: where it stopped
            job.folder.update(status=status, error=error, result=result, finished=time.time(), eta_s=None,
                              progress=progress, message=message, stage=stage)
            self._touch(job)

    def _touch(self, job: ServerJob) -> None:
        job.version += 1
        self._cond.notify_all()

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
        """List job folders already in the root; server jobs cut off by a stop are marked failed."""
        for path in sorted(self.root.iterdir()):
            if not (path / JOB_FILE).is_file():
                continue
            try:
                folder = JobFolder.open(path)
                if folder.record.get("id") != path.name or folder.status not in (*TERMINAL, "queued", "running"):
                    continue
            except (OSError, ValueError, KeyError):
                log.warning("skipping unreadable job folder %s", path)
                continue
            if folder.record.get("server") and folder.status not in TERMINAL:
                folder.update(status="failed", finished=folder.record.get("finished") or time.time(),
                              message="failed", error={"message": "server stopped before the job finished",
                                                       "fix": "submit the job again"})
            self._jobs[folder.id] = ServerJob(folder)

    def close(self, timeout: float = 10.0) -> None:
        """Stop: cancel the running job, mark queued ones failed, wait for the worker."""
        with self._cond:
            self._stopping = True
            queued = list(self._queue)
            self._queue.clear()
            if self._running is not None:
                self._running.tracker.cancel()
            self._cond.notify_all()
        for job in queued:
            self._finish(job, "failed", error={"message": "server stopped before the job started",
                                               "fix": "submit the job again"})
        self._worker.join(timeout)
        self._lock.release()


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


def _api_error(error: Any) -> dict | None:
    """The contract's error object: {message, fix} (the traceback stays in job.json)."""
    if not error:
        return None
    if isinstance(error, dict):
        return {"message": error.get("message") or str(error), "fix": error.get("fix")}
    return {"message": str(error), "fix": None}


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
