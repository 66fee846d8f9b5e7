"""The two ways the add-on runs a job, behind one interface (no bpy here; threads only).

* :class:`ServerBackend`: ``orbitmesh serve`` on this machine (or the studio's workstation),
  spoken to over HTTP with :mod:`.client`.
* :class:`SubprocessBackend` ("In Blender"): ``<python> -m orbitmesh generate ... --progress jsonl``
  in a child process with the bundled wheels (or a configured site-packages folder) on
  PYTHONPATH, so a crash or an out-of-memory kill cannot take Blender down.

``submit(spec)`` returns a :class:`JobHandle` whose worker thread follows the job; Blender's
main thread only calls ``state()`` (a copy under a lock) and ``request_cancel()``. A backend that
cannot start or answer raises :class:`~.errors.AddonError` (:class:`~.client.ServerError` for HTTP).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..contract import TERMINAL
from . import client as http
from . import settings as contract_settings
from .errors import AddonError

POLL_S = 0.25  # server status polling interval
CANCEL_GRACE_S = 30.0  # how long a cancelled server job may take to stop before we stop waiting
KILL_AFTER_S = 5.0  # terminate -> kill for a subprocess that ignores SIGTERM
LOST_CONTACT_S = 15.0  # consecutive failed polls before a server job counts as lost


@dataclass
class JobSpec:
    """What to run. ``settings`` is a settings dict (see :mod:`.settings`); None or "" = the backend's default."""

    name: str
    work_dir: Path
    image_path: str | None = None
    prompt: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def clean_settings(self) -> dict[str, Any]:
        """Settings without None/empty values (an empty model means the backend's default)."""
        return contract_settings.clean(self.settings)


@dataclass
class JobState:
    status: str = "submitting"  # submitting|queued|running|done|failed|cancelled
    stage: str = ""
    step: int = 0
    total: int = 0
    message: str = ""
    eta_s: float | None = None
    progress: float = 0.0  # 0..1 over the whole job
    error: dict[str, Any] | None = None  # {"message", "fix"}
    glb_path: str = ""
    job_dir: str = ""
    preview_path: str = ""
    remote_id: str = ""
    version: str = ""
    result: dict[str, Any] | None = None


class JobHandle:
    """A job followed by a worker thread; every public method is thread-safe."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._state = JobState()
        self._cancel = threading.Event()
        self._wake = threading.Event()
        self._done = threading.Event()

    def state(self) -> JobState:
        with self._lock:
            return replace(self._state)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def request_cancel(self) -> None:
        self._cancel.set()
        self._wake.set()

    def wait(self, timeout: float | None = None) -> JobState:
        """Block until the job ends (scripts and tests); returns the final state."""
        self._done.wait(timeout)
        return self.state()

    def _set(self, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self._state, key, value)

    def _finish(self, status: str, **values: Any) -> None:
        if status != "done":
            values.setdefault("eta_s", None)
        self._set(status=status, **values)
        self._done.set()


# ----- server ------------------------------------------------------------------------------


class ServerJob(JobHandle):
    def __init__(self, client: http.Client, spec: JobSpec, remote_id: str, version: str = "") -> None:
        super().__init__(spec)
        self.client = client
        self._set(remote_id=remote_id, status="queued", version=version,
                  preview_path=spec.image_path or "")
        self._thread = threading.Thread(target=self._run, name=f"orbitmesh-job-{remote_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as exc:  # never let a worker die silently: the panel must show it
            self._finish("failed", error={"message": f"internal error following the job: {exc}",
                                          "fix": "see the system console; please report it"})

    def _follow(self) -> None:
        remote_id = self.state().remote_id
        cancel_sent: float | None = None
        last_ok = time.monotonic()
        while True:
            if self._cancel.is_set() and cancel_sent is None:
                cancel_sent = time.monotonic()
                try:
                    self.client.cancel(remote_id)
                except http.ServerError as exc:
                    if exc.status != 409:  # 409: it finished meanwhile; the poll below says how
                        self._set(message=f"cancel failed: {exc.message}")
            try:
                job = self.client.job(remote_id)
                last_ok = time.monotonic()
            except http.ServerError as exc:
                if cancel_sent is not None:
                    self._finish("cancelled", message="cancelled")
                    return
                if exc.status == 404 or time.monotonic() - last_ok > LOST_CONTACT_S:
                    self._finish("failed", error={"message": f"lost the job on the server: {exc.message}",
                                                  "fix": exc.fix or "check the server and regenerate"})
                    return
                self._wake.wait(POLL_S)
                self._wake.clear()
                continue
            status = job.get("status", "queued")
            self._set(status=status if status not in TERMINAL else self.state().status,
                      stage=job.get("stage") or "", step=int(job.get("step") or 0),
                      total=int(job.get("total") or 0), message=job.get("message") or "",
                      eta_s=job.get("eta_s"), progress=float(job.get("progress") or 0.0))
            if status == "done":
                if self._cancel.is_set():
                    self._finish("cancelled", message="finished before the cancel arrived; not imported")
                else:
                    self._download(remote_id, job)
                return
            if status in ("failed", "cancelled"):
                err = job.get("error") or {}
                self._finish(status, message=status,
                             error=None if status == "cancelled" else
                             {"message": err.get("message") or "the job failed", "fix": err.get("fix")})
                return
            if cancel_sent is not None and time.monotonic() - cancel_sent > CANCEL_GRACE_S:
                self._finish("cancelled", message="cancelled (the server is still stopping the job)")
                return
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _download(self, remote_id: str, job: dict) -> None:
        files = list(job.get("files") or [])
        result = job.get("result") or {}
        glb = result.get("glb") or os.path.basename(str(result.get("glb_path") or ""))
        if not glb or glb not in files:
            glb = next((f for f in files if f.lower().endswith(".glb")), "")
        if not glb:
            self._finish("failed", error={"message": "the server finished the job but lists no GLB file",
                                          "fix": "check the server log; regenerate"})
            return
        work = Path(self.spec.work_dir)
        try:
            path = self.client.download(remote_id, glb, work / glb)
            preview = self.state().preview_path
            if not preview:  # prompt jobs: the generated input image makes the thumbnail
                for name in ("input.png", "preprocessed.png"):
                    if name in files:
                        preview = str(self.client.download(remote_id, name, work / name))
                        break
        except http.ServerError as exc:
            self._finish("failed", error={"message": f"could not download the result: {exc.message}",
                                          "fix": exc.fix or "regenerate"})
            return
        self._finish("done", glb_path=str(path), preview_path=preview, result=result, progress=1.0,
                     message="done")


# The job key that asks the backend to refuse models whose licence does not allow commercial use: a JSON key
# beside the settings for the server (it can only turn the check on), --commercial-only for the subprocess.
COMMERCIAL_ONLY = "commercial_only"
COMMERCIAL_ONLY_FLAG = "--commercial-only"


class ServerBackend:
    name = "server"

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 10.0,
                 commercial_only: bool = False) -> None:
        self.client = http.Client(url, timeout=timeout, token=token)  # ServerError on a bad URL
        self.commercial_only = commercial_only

    def health(self, timeout: float = 3.0) -> dict:
        return self.client.health(timeout=timeout)

    def job_fields(self, spec: JobSpec) -> dict[str, Any]:
        """What a job sends besides its source: the settings, plus commercial_only when asked."""
        fields = spec.clean_settings()
        if self.commercial_only:
            fields[COMMERCIAL_ONLY] = True
        return fields

    def submit(self, spec: JobSpec) -> ServerJob:
        settings = self.job_fields(spec)
        if spec.prompt is not None:
            answer = self.client.submit_prompt(spec.prompt, settings)
        else:
            answer = self.client.submit_image(spec.image_path or "", settings)
        version = ""
        try:
            version = str(self.client.health(timeout=2.0).get("version") or "")
        except http.ServerError:
            pass
        return ServerJob(self.client, spec, str(answer["id"]), version)


# ----- subprocess ("In Blender") -----------------------------------------------------------

PROBE = r"""
import json, sys
try:
    import orbitmesh
except Exception as exc:
    print(json.dumps({"status": "missing", "message": "orbitmesh cannot be imported: %s" % exc}))
    sys.exit(0)
out = {"status": "ok", "version": orbitmesh.__version__, "path": orbitmesh.__file__}
try:
    from orbitmesh.settings import load_settings
    from orbitmesh.server.health import health_info
    kw = json.loads(sys.argv[1])
    out.update(health_info(load_settings(**kw), None))
except Exception as exc:
    out["note"] = "partial status: %s" % exc
    try:
        from orbitmesh.pipeline.request import MODES
        out.setdefault("modes", ["fast"] if "quality" in MODES else list(MODES))
    except Exception:
        pass
print(json.dumps(out, default=str))
"""


def no_window() -> int:
    return getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0


def python_env(pythonpath: list[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for an orbitmesh child process: our paths first on PYTHONPATH."""
    env = dict(os.environ)
    paths = [p for p in pythonpath if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def mark_job_json_cancelled(work_dir: Path) -> None:
    """A terminated child cannot record its cancel: mark its pipeline job folder ourselves."""
    for path in Path(work_dir).glob("*/job.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("status") in TERMINAL:
                continue
            record.update(status="cancelled", finished=time.time(),
                          error={"stage": record.get("stage"), "message": "cancelled by the user"})
            fd, tmp = tempfile.mkstemp(prefix=".job.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, indent=2, default=str)
            os.replace(tmp, path)
        except (OSError, ValueError):
            continue


class SubprocessJob(JobHandle):
    def __init__(self, argv: list[str], env: dict[str, str], spec: JobSpec) -> None:
        super().__init__(spec)
        work = Path(spec.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = work / "generate.log"
        self._log = open(self.log_path, "w", encoding="utf-8")
        self._log.write(" ".join(argv) + "\n")
        self._log.flush()
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
                                         env=env, cwd=str(work), text=True, encoding="utf-8", errors="replace",
                                         bufsize=1, creationflags=no_window())
        except OSError as exc:
            self._log.close()
            raise AddonError(f"cannot start {argv[0]}: {exc.strerror or exc}",
                               fix="check the Python executable in the OrbitMesh add-on preferences") from None
        self._set(status="queued", preview_path=spec.image_path or "", message="starting")
        self._thread = threading.Thread(target=self._run, name="orbitmesh-subprocess", daemon=True)
        self._thread.start()

    def request_cancel(self) -> None:
        super().request_cancel()
        if self.proc.poll() is None:
            self.proc.terminate()
            threading.Timer(KILL_AFTER_S, self._kill_if_alive).start()

    def _kill_if_alive(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def _run(self) -> None:
        terminal: tuple[str, dict] | None = None
        try:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                line = line.strip()
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    if line:
                        self._log.write(line + "\n")
                    continue
                kind = event.get("event")
                if kind == "progress":
                    self._set(**progress_values(event, self.state().progress))
                elif kind == "done":
                    terminal = ("done", event.get("result") or {})
                elif kind == "error":
                    terminal = ("failed", {"message": event.get("message") or "generation failed",
                                           "fix": event.get("fix")})
                elif kind == "cancelled":
                    terminal = ("cancelled", {})
            rc = self.proc.wait()
        except Exception as exc:
            self._finish("failed", error={"message": f"internal error reading the job: {exc}", "fix": None})
            return
        finally:
            self._log.close()
        self._conclude(rc, terminal)

    def _conclude(self, rc: int, terminal: tuple[str, dict] | None) -> None:
        if self._cancel.is_set():
            mark_job_json_cancelled(Path(self.spec.work_dir))
            self._finish("cancelled", message="cancelled")
            return
        if terminal and terminal[0] == "done":
            status, values = done_values(terminal[1], self.log_path)
            self._finish(status, **values)
            return
        if terminal:
            self._finish(terminal[0], error=terminal[1] or None, message=terminal[0])
            return
        self._finish("failed", error=exit_error(rc, self.log_path, "the generation process"))


def progress_values(event: dict, previous: float) -> dict[str, Any]:
    """JobState fields of a jsonl progress event; the overall progress never steps back from ``previous``."""
    return {"status": "running", "stage": str(event.get("stage") or ""), "step": int(event.get("step") or 0),
            "total": int(event.get("total") or 0), "message": str(event.get("message") or ""),
            "eta_s": event.get("eta_s"), "progress": max(previous, event_progress(event))}


def done_values(result: dict, log_path: Path) -> tuple[str, dict[str, Any]]:
    """(status, JobState fields) of a job its child reported done with ``result``: failed when the GLB is
    missing; the backend version is read from the pipeline's job.json."""
    glb = str(result.get("glb_path") or "")
    if not glb or not os.path.isfile(glb):
        return "failed", {"error": {"message": f"the job finished but its GLB is missing ({glb!r})",
                                    "fix": f"see {log_path}"}}
    version = ""
    job_dir = str(result.get("job_dir") or "")
    try:
        version = json.loads(Path(job_dir, "job.json").read_text(encoding="utf-8"))["versions"]["orbitmesh"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return "done", {"glb_path": glb, "job_dir": job_dir, "result": result, "progress": 1.0, "message": "done",
                    "version": version}


def exit_error(rc: int, log_path: Path, what: str) -> dict[str, str]:
    """The (message, fix) of a child process (``what``) that ended with exit code ``rc`` and no final event."""
    if rc < 0 or rc in (137, 139, -9, 3221225477):
        return {"message": f"{what} was killed (exit code {rc}); out of memory?",
                "fix": "try a smaller mesh resolution or texture size, or the Local server backend on a bigger "
                       "machine"}
    tail = _tail(log_path)
    return {"message": f"{what} stopped unexpectedly (exit code {rc})" + (f": {tail}" if tail else ""),
            "fix": f"see the log {log_path}"}


def event_progress(event: dict) -> float:
    """The backend's overall progress (0..1) in a jsonl progress event; 0 when it has none."""
    try:
        value = float(event.get("progress") or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(value) else min(1.0, max(0.0, value))


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-300:]


class SubprocessBackend:
    name = "inprocess"

    def __init__(self, python: str, pythonpath: list[str], *, model_dir: str = "", device: str = "auto",
                 extra_env: dict[str, str] | None = None, commercial_only: bool = False) -> None:
        self.python = python or sys.executable
        self.pythonpath = [p for p in pythonpath if p]
        self.model_dir = model_dir
        self.device = device
        self.commercial_only = commercial_only
        self.extra_env = extra_env or {}
        if not (os.path.isfile(self.python) or shutil.which(self.python)):
            raise AddonError(f"Python executable not found: {self.python}",
                               fix="set 'Python' in the OrbitMesh add-on preferences (or leave it empty)")

    def env(self) -> dict[str, str]:
        return python_env(self.pythonpath, self.extra_env)

    def settings_args(self) -> list[str]:
        args = []
        if self.device and self.device != "auto":
            args += ["--device", self.device]
        if self.model_dir:
            args += ["--model-dir", self.model_dir]
        if self.commercial_only:
            args.append(COMMERCIAL_ONLY_FLAG)
        return args

    def argv(self, spec: JobSpec) -> list[str]:
        work = Path(spec.work_dir)
        argv = [self.python, "-m", "orbitmesh", "generate"]
        if spec.prompt is not None:
            argv += ["--prompt", spec.prompt]
        else:
            argv.append(str(spec.image_path))
        argv += ["-o", str(work / "model.glb"), "--progress", "jsonl", "--output-dir", str(work)]
        argv += contract_settings.cli_args(spec.settings)  # each setting's flag from the contract
        return argv + self.settings_args()

    def submit(self, spec: JobSpec) -> SubprocessJob:
        return SubprocessJob(self.argv(spec), self.env(), spec)

    def health(self, timeout: float = 120.0) -> dict:
        """Import orbitmesh in a child process and report what the server's /health would."""
        kw = {"model_dir": self.model_dir or None, "device": self.device or None,
              "commercial_only": True if self.commercial_only else None}
        try:
            out = subprocess.run([self.python, "-c", PROBE, json.dumps(kw)], capture_output=True, text=True,
                                 env=self.env(), timeout=timeout, creationflags=no_window())
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AddonError(f"cannot run {self.python}: {exc}", fix="check the add-on preferences") from None
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise AddonError(f"the OrbitMesh check failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}",
                               fix="check the Python and site-packages settings in the add-on preferences")
        data = json.loads(lines[-1])
        if data.get("status") != "ok":
            raise AddonError(data.get("message", "orbitmesh is not available"),
                               fix="install the full OrbitMesh package (with wheels) or set a site-packages "
                                   "folder that has orbitmesh in the add-on preferences")
        return data


# ----- starting a local server -------------------------------------------------------------


def start_server(python: str, url: str, pythonpath: list[str], *, model_dir: str = "", device: str = "auto",
                 output_dir: str = "", log_path: str | os.PathLike, token: str = "") -> subprocess.Popen:
    """Launch ``orbitmesh serve`` for ``url`` (host and port taken from it); output goes to ``log_path``."""
    import urllib.parse

    parts = urllib.parse.urlsplit(http.normalize_url(url))
    host, port = parts.hostname or "127.0.0.1", parts.port or 8765
    argv = [python or sys.executable, "-m", "orbitmesh", "serve", "--host", host, "--port", str(port)]
    if device and device != "auto":
        argv += ["--device", device]
    if model_dir:
        argv += ["--model-dir", model_dir]
    if output_dir:
        argv += ["--output-dir", output_dir]
    extra = {"ORBITMESH_TOKEN": token} if token else {}
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w", encoding="utf-8")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=python_env(pythonpath, extra), creationflags=no_window())
    except OSError as exc:
        raise AddonError(f"cannot start the server with {argv[0]}: {exc.strerror or exc}",
                           fix="set the Python executable in the OrbitMesh add-on preferences") from None
    finally:
        log.close()


def wait_for_health(url: str, proc: subprocess.Popen | None, *, timeout: float = 120.0, token: str = "",
                    log_path: str | os.PathLike | None = None,
                    should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Poll ``GET /health`` until it answers; fail early with the log's last line if ``proc`` exits."""
    client = http.Client(url, timeout=15.0, token=token or None)
    deadline = time.monotonic() + timeout
    while True:
        try:  # the first /health may take seconds (torch import for the device probe)
            return client.health(timeout=max(1.0, min(15.0, deadline - time.monotonic())))
        except http.ServerError as exc:
            if not isinstance(exc, http.ServerUnreachable) and exc.code != "timeout":
                raise
        if proc is not None and proc.poll() is not None:
            tail = _tail(Path(log_path)) if log_path else ""
            raise AddonError(f"the server exited (code {proc.returncode})" + (f": {tail}" if tail else ""),
                               fix=f"see the server log {log_path}" if log_path else "run `orbitmesh serve` "
                               "in a terminal to see why")
        if time.monotonic() > deadline or should_stop():
            raise AddonError(f"the server did not answer at {url} within {timeout:.0f} s",
                               fix=f"see the server log {log_path}" if log_path else "check the URL")
        time.sleep(0.25)
