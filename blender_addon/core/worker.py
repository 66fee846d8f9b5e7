"""The warm "In Blender" backend: one ``orbitmesh worker`` child kept between jobs (no bpy; threads only).

A fresh child per job (:class:`.backends.SubprocessBackend`) pays for Python, torch and the model
load on every click. :class:`WorkerBackend` sends its jobs to a :class:`WarmWorker` instead: a child
that keeps them loaded and exits by itself after ``keep_alive_s`` without a job, spoken to with the
JSON lines of ``orbitmesh worker`` (requests on its stdin, events on its stdout; see
``backend/orbitmesh/cli/worker.py`` and docs/blender-addon.md). The workers of this Blender session
are :data:`.session.WORKERS`; a job whose configuration (Python, paths, model folder, device,
commercial-only, idle times) differs from the newest worker's starts a new one and the old one stops
once its jobs have ended (the model itself may change inside one worker: it caches the last one).

A child per job also meant a crash could never take Blender down, and that stays: a crash or an
out-of-memory kill fails the jobs the child held with a (message, fix), and the next job starts a
fresh child. A cancel goes to the child, which stops the job at its next progress step; a child
that has not stopped it after :data:`CANCEL_KILL_S` is killed.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from . import session
from .backends import (
    JobHandle,
    JobSpec,
    SubprocessBackend,
    done_values,
    exit_error,
    mark_job_json_cancelled,
    no_window,
    progress_values,
    python_env,
)
from .errors import AddonError

CANCEL_KILL_S = 20.0  # a cancelled job still running after this: the worker is killed (a stuck native call)
STOP_WAIT_S = 3.0  # a worker asked to shut down that has not exited after this is killed
IDLE_MARGIN_S = 5.0  # a worker this close to its idle exit gets no new job (a fresh one does)
LOG_MAX_BYTES = 2_000_000  # the shared worker log starts over beyond this


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process is started with; a job that needs another configuration gets a new worker.

    ``settings_args`` are the process settings' flags (``--device``, ``--model-dir``, ``--commercial-only``);
    ``idle_exit_s`` > 0 (the worker's idle exit), ``release_after_s`` 0 = never free memory while idle;
    ``log_path`` (optional) collects every worker's stderr, besides each job's ``generate.log``.
    ``model`` is the reconstruction model the jobs name ("" = the backend's default): a job naming another
    model gets a fresh worker, so the previous model's memory (GPU allocator caches included) leaves with
    its process.
    """

    python: str
    pythonpath: tuple[str, ...] = ()
    settings_args: tuple[str, ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()
    idle_exit_s: float = 600.0
    release_after_s: float = 0.0
    log_path: str = ""
    model: str = ""

    def argv(self) -> list[str]:
        return [self.python, "-m", "orbitmesh", "worker", "--idle-exit", f"{self.idle_exit_s:g}",
                "--release-after", f"{self.release_after_s:g}", *self.settings_args]

    def env(self) -> dict[str, str]:
        return python_env(list(self.pythonpath), dict(self.extra_env))


class WorkerJob(JobHandle):
    """A job run by a :class:`WarmWorker`; the worker's reader thread applies its events."""

    def __init__(self, worker: "WarmWorker", spec: JobSpec, job_id: str) -> None:
        super().__init__(spec)
        self.worker = worker
        self.id = job_id
        work = Path(spec.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = work / "generate.log"
        self._log_lock = threading.Lock()
        self._log: IO[str] | None = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115  (closed by _end)
        self._log.write(f"job {job_id} in the OrbitMesh worker {worker.pid}: {' '.join(worker.config.argv())}\n")
        self._log.flush()
        self._seen = False  # any event of this job came back
        self._set(status="queued", preview_path=spec.image_path or "",
                  message="queued" if worker.ready.is_set() else "starting the backend")

    def request(self) -> dict[str, Any]:
        """The worker's submit request for this job (GLB and job folder inside the job's work folder)."""
        work = Path(self.spec.work_dir)
        req: dict[str, Any] = {"op": "submit", "id": self.id, "settings": self.spec.clean_settings(),
                               "output": str(work / "model.glb"), "output_dir": str(work)}
        if self.spec.prompt is not None:
            req["prompt"] = self.spec.prompt
        else:
            req["image_path"] = str(self.spec.image_path)
        return req

    def request_cancel(self) -> None:
        super().request_cancel()
        if self.finished:
            return
        self.worker.cancel(self.id)
        timer = threading.Timer(CANCEL_KILL_S, self._kill_if_stuck)
        timer.daemon = True
        timer.start()

    def _kill_if_stuck(self) -> None:
        if not self.finished:
            self.log(f"the job did not stop within {CANCEL_KILL_S:.0f} s of the cancel: killing the worker")
            self.worker.kill()

    def log(self, line: str) -> None:
        with self._log_lock:
            if self._log is not None:
                self._log.write(line + "\n")
                self._log.flush()

    # -- events (the worker's reader thread) --

    def on_event(self, event: dict[str, Any]) -> bool:
        """Apply one of this job's events; True when it ended the job."""
        kind = event.get("event")
        self._seen = True
        if kind == "started":
            self._set(status="running", message="starting")
            return False
        if kind == "progress":
            self._set(**progress_values(event, self.state().progress))
            return False
        if kind == "done":
            if self.cancel_requested:  # as the server backend does: a cancelled job is never imported
                self._end("cancelled", message="finished before the cancel arrived; not imported")
            else:
                status, values = done_values(event.get("result") or {}, self.log_path)
                self._end(status, **values)
        elif kind == "error":
            self._end("failed", message="failed", error={"message": event.get("message") or "generation failed",
                                                         "fix": event.get("fix")})
        elif kind == "cancelled":
            mark_job_json_cancelled(Path(self.spec.work_dir))  # a job dropped from the queue has no folder
            self._end("cancelled", message="cancelled")
        else:
            return False
        return True

    def on_worker_exit(self, rc: int, reason: str) -> None:
        """The worker ended while this job was outstanding."""
        if self.cancel_requested:
            mark_job_json_cancelled(Path(self.spec.work_dir))  # a killed worker could not record it
            self._end("cancelled", message="cancelled")
        elif reason == "idle" and not self._seen:
            self._end("failed", error={"message": "the backend process exited (idle) as the job was sent",
                                       "fix": "generate again"})
        elif "invalid choice: 'worker'" in _read(self.log_path):
            self._end("failed", error={"message": "this orbitmesh is older than the add-on: it has no worker command",
                                       "fix": "update the bundled wheels or the Site-packages folder, or set Keep "
                                              "Loaded (minutes) to 0 in the add-on preferences"})
        else:
            self._end("failed", error=exit_error(rc, self.log_path, "the backend process"))

    def _end(self, status: str, **values: Any) -> None:
        with self._log_lock:
            if self._log is not None:
                self._log.close()
                self._log = None
        if not self.finished:
            self._finish(status, **values)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


class WarmWorker:
    """One ``orbitmesh worker`` child and the jobs sent to it; every public method is thread-safe."""

    _ids = itertools.count(1)

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.ready = threading.Event()  # the worker said "ready"
        self.exited = threading.Event()  # its output ended and its jobs were concluded
        self.info: dict[str, Any] = {}  # the "ready" event: pid, version
        self.exit_reason = ""  # the worker's own "exit" event: idle | shutdown | eof | terminated
        self.returncode: int | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._jobs: dict[str, WorkerJob] = {}
        self._retired = False
        self._last_activity = time.monotonic()
        self._log = self._open_log(config.log_path)
        try:
            self.proc = subprocess.Popen(config.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=config.env(), text=True, encoding="utf-8",
                                         errors="replace", bufsize=1, creationflags=no_window())
        except OSError as exc:
            if self._log is not None:
                self._log.close()
            raise AddonError(f"cannot start {config.python}: {exc.strerror or exc}",
                             fix="check the Python executable in the OrbitMesh add-on preferences") from None
        self._write_log(f"started {' '.join(config.argv())} (pid {self.proc.pid})")
        self._log_reader = threading.Thread(target=self._read_log, name=f"orbitmesh-worker-log-{self.pid}",
                                            daemon=True)
        self._log_reader.start()
        threading.Thread(target=self._read_events, name=f"orbitmesh-worker-{self.pid}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and not self.exited.is_set()

    def usable(self) -> bool:
        """Alive, not retired, and not about to exit for idleness: it may take a new job."""
        with self._lock:
            if self._retired or not self.alive:
                return False
            if self._jobs:
                return True
            idle = time.monotonic() - self._last_activity
            return idle < self.config.idle_exit_s - min(IDLE_MARGIN_S, self.config.idle_exit_s / 4)

    def submit(self, spec: JobSpec) -> WorkerJob:
        job = WorkerJob(self, spec, f"{self.pid}-{next(self._ids)}")
        with self._lock:
            gone = self.exited.is_set()
            if not gone:
                self._jobs[job.id] = job
                self._last_activity = time.monotonic()
        if gone:  # it ended between usable() and now; the next job starts a fresh one
            job.on_worker_exit(self.returncode if self.returncode is not None else -1, self.exit_reason)
            return job
        self.send(job.request())  # if the worker died meanwhile, its end fails the job (it is registered)
        return job

    def send(self, request: dict[str, Any]) -> bool:
        """Write one request line; False when the worker no longer reads."""
        with self._send_lock:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps(request) + "\n")
                self.proc.stdin.flush()
                return True
            except (OSError, ValueError):  # a broken pipe, or stdin closed by stop()
                return False

    def cancel(self, job_id: str) -> None:
        self.send({"op": "cancel", "id": job_id})

    def release(self) -> None:
        """Ask the worker to free its cached models and GPU memory now."""
        self.send({"op": "release"})

    def retire(self) -> None:
        """Take no new job; stop once the jobs already sent have ended."""
        with self._lock:
            self._retired = True
            idle = not self._jobs
        if idle:
            self.stop(timeout=0)

    def stop(self, timeout: float = STOP_WAIT_S) -> None:
        """Shut the worker down (its running job is cancelled, the queued ones dropped) and close its stdin;
        killed when it has not exited after ``timeout`` s (0: do not wait, a timer kills it later)."""
        with self._lock:
            self._retired = True
        self.send({"op": "shutdown"})
        with self._send_lock:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
        if timeout <= 0:
            timer = threading.Timer(STOP_WAIT_S, self.kill)
            timer.daemon = True
            timer.start()
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(timeout)
        self.exited.wait(timeout)  # the reader concludes the outstanding jobs

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    # -- the reader threads --

    def _read_events(self) -> None:
        rc = -1
        try:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict):
                    self._dispatch(event)
                elif line.strip():
                    self._write_log(line.rstrip())  # the worker keeps stdout clean; an older backend may not
            rc = self.proc.wait()
        finally:
            self._log_reader.join(5.0)  # its last lines (a traceback) belong in the logs the errors point at
            with self._lock:
                self.returncode = rc
                jobs = list(self._jobs.values())
                self._jobs.clear()
                self.exited.set()
            for job in jobs:
                job.on_worker_exit(rc, self.exit_reason)
            self._write_log(f"exited with code {rc} ({self.exit_reason or 'no exit event'})")
            with self._lock:
                log, self._log = self._log, None
            if log is not None:
                log.close()

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        with self._lock:
            self._last_activity = time.monotonic()
            job = self._jobs.get(str(event.get("id")))
        if kind == "ready":
            self.info = event
            self.ready.set()
            return
        if kind == "exit":
            self.exit_reason = str(event.get("reason") or "")
            return
        if job is None:
            if kind in ("error", "released"):
                self._write_log(f"worker event: {json.dumps(event)}")
            return
        try:
            ended = job.on_event(event)
        except Exception as exc:  # never let the reader die: the panel must show it
            job._end("failed", error={"message": f"internal error following the job: {exc}",
                                      "fix": "see the system console; please report it"})
            ended = True
        if ended:
            with self._lock:
                self._jobs.pop(job.id, None)
                done = self._retired and not self._jobs
            if done:
                self.stop(timeout=0)

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._write_log(line.rstrip("\n"))

    def _write_log(self, line: str) -> None:
        """A line of the worker's stderr: into the worker log and every outstanding job's generate.log."""
        with self._lock:
            jobs = list(self._jobs.values())
            if self._log is not None:
                self._log.write(line + "\n")
                self._log.flush()
        for job in jobs:
            job.log(line)

    @staticmethod
    def _open_log(path: str) -> IO[str] | None:
        if not path:
            return None
        try:
            if os.path.getsize(path) > LOG_MAX_BYTES:
                os.replace(path, path + ".old")
        except OSError:
            pass
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return open(path, "a", encoding="utf-8")  # noqa: SIM115  (closed when the worker's output ends)
        except OSError:
            return None


_POOL_LOCK = threading.Lock()


def shared_worker(config: WorkerConfig) -> WarmWorker:
    """The newest worker of this session when it runs ``config`` and may take a job, else a new one (the
    others retire: they finish their jobs and stop)."""
    with _POOL_LOCK:
        session.WORKERS[:] = [w for w in session.WORKERS if w.alive]
        newest = session.WORKERS[-1] if session.WORKERS else None
        if newest is not None and newest.config == config and newest.usable():
            return newest
        for worker in session.WORKERS:
            worker.retire()
        worker = WarmWorker(config)
        session.WORKERS.append(worker)
        return worker


class WorkerBackend(SubprocessBackend):
    """The In-Blender backend with a warm worker (the module docstring): same name, settings and health check
    as :class:`.backends.SubprocessBackend`, jobs sent to :func:`shared_worker`.

    ``keep_alive_s`` (> 0) is the worker's idle exit; ``release_after_s`` > 0 frees its models and GPU memory
    after that much idle time.
    """

    def __init__(self, python: str, pythonpath: list[str], *, keep_alive_s: float, release_after_s: float = 0.0,
                 log_path: str = "", **kwargs: Any) -> None:
        super().__init__(python, pythonpath, **kwargs)
        if keep_alive_s <= 0:
            raise ValueError("a warm worker needs keep_alive_s > 0 (0 is SubprocessBackend: a child per job)")
        self.keep_alive_s = keep_alive_s
        self.release_after_s = release_after_s
        self.log_path = log_path

    def config(self) -> WorkerConfig:
        return WorkerConfig(python=self.python, pythonpath=tuple(self.pythonpath),
                            settings_args=tuple(self.settings_args()), extra_env=tuple(sorted(self.extra_env.items())),
                            idle_exit_s=float(self.keep_alive_s), release_after_s=float(self.release_after_s),
                            log_path=self.log_path)

    def submit(self, spec: JobSpec) -> WorkerJob:
        model = str(spec.settings.get("model") or "")
        return shared_worker(replace(self.config(), model=model)).submit(spec)
