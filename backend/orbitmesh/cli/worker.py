"""``orbitmesh worker`` (internal): the Blender add-on's warm "In Blender" backend.

One process that keeps Python, torch and the loaded model between jobs, spoken to with JSON
lines (the protocol of ``generate --progress jsonl`` plus a job ``id`` on every job event):

stdin, one request per line::

    {"op": "submit", "id": "J", "image_path": P | "prompt": T, "settings": {...}, "output": GLB?, "output_dir": D?}
    {"op": "cancel", "id": "J"}   stop job J at its next progress step (a queued job is dropped)
    {"op": "release"}             free the cached models and the GPU memory now
    {"op": "shutdown"}            cancel the running job, drop the queued ones, exit

stdout, one event per line (nothing else is ever written there)::

    {"event": "ready", "pid": N, "version": V}
    {"event": "started", "id": J}
    {"event": "progress", "id": J, "stage", "step", "total", "message", "eta_s", "progress"}
    {"event": "done", "id": J, "result": {...}} | {"event": "error", "id": J, "message", "fix"}
        | {"event": "cancelled", "id": J}
    {"event": "released", "reason": "asked" | "idle"}
    {"event": "exit", "reason": "idle" | "shutdown" | "eof" | "terminated"}

``settings`` are client settings (as the server takes them, :meth:`GenerateRequest.from_settings`);
the process settings (``--model-dir``, ``--device``, ``--commercial-only``) are fixed at start, only
``output_dir`` is per job. A malformed request is answered with an ``error`` event (its ``id`` or
null). Jobs run one at a time, in order, on the main thread (pymeshlab's Qt wants it); a reader
thread takes the requests, so a cancel reaches the running job. End of stdin (the parent is gone)
and SIGTERM are a shutdown. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, TextIO

from orbitmesh import __version__
from orbitmesh.cli.common import add_settings_args, settings_from_args
from orbitmesh.errors import InputError, JobCancelled, OrbitMeshError
from orbitmesh.progress import ProgressEvent, ProgressTracker
from orbitmesh.settings import Settings

if TYPE_CHECKING:
    from orbitmesh.pipeline.request import GenerateRequest

OPS = ("submit", "cancel", "release", "shutdown")
Emit = Callable[[dict[str, Any]], None]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("worker", help="(internal) the Blender add-on's warm In-Blender backend: jobs as JSON "
                                           "lines on stdin/stdout",
                            description="Internal: the process the Blender add-on keeps loaded between jobs. "
                                        "Reads requests and writes events as JSON lines (docs/blender-addon.md).")
    parser.add_argument("--idle-exit", type=float, default=600.0, metavar="S",
                        help="exit after S seconds without a job (default 600; 0: never)")
    parser.add_argument("--release-after", type=float, default=0.0, metavar="S",
                        help="free the cached models and GPU memory after S idle seconds (default 0: never)")
    add_settings_args(parser)
    parser.set_defaults(func=run)


def release_memory() -> bool:
    """Drop the cached model and empty the accelerator's cache; True when a model was held."""
    from orbitmesh.models.registry import release_cached_lrm

    held = release_cached_lrm()
    gc.collect()
    torch = sys.modules.get("torch")  # never imported just to free nothing
    if torch is not None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        mps = getattr(torch, "mps", None)
        if mps is not None and torch.backends.mps.is_available():
            mps.empty_cache()
    return held


def run_generate(request, settings: Settings, tracker: ProgressTracker):
    """The real pipeline (imported with the first job)."""
    from orbitmesh.pipeline.generate import generate

    return generate(request, settings=settings, progress=tracker)


class Worker:
    """The request loop of one worker process (:func:`run` wires it to stdin/stdout).

    ``emit`` writes one event (thread-safe); ``runner(request, settings, tracker)`` runs one job;
    ``release()`` frees memory. Thresholds are in seconds, 0 = never.
    """

    def __init__(self, settings: Settings, emit: Emit, *, idle_exit_s: float = 600.0, release_after_s: float = 0.0,
                 runner: Callable[..., Any] = run_generate, release: Callable[[], bool] = release_memory) -> None:
        self.settings = settings
        self.idle_exit_s = idle_exit_s
        self.release_after_s = release_after_s
        self._emit_raw = emit
        self._emit_lock = threading.Lock()
        self._runner = runner
        self._release = release
        self._requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()  # guards the running job, its tracker and the cancelled ids
        self._running: str | None = None
        self._tracker: ProgressTracker | None = None
        self._cancelled: set[str] = set()
        self._stop_reason = ""

    # ----- any thread ---------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        with self._emit_lock:
            self._emit_raw(event)

    def take(self, line: str) -> None:
        """One request line (the reader thread): cancel and shutdown act at once, the rest are queued."""
        line = line.strip()
        if not line:
            return
        try:
            req = json.loads(line)
        except ValueError:
            req = None
        if not isinstance(req, dict) or req.get("op") not in OPS:
            self.emit({"event": "error", "id": req.get("id") if isinstance(req, dict) else None,
                       "message": f"not a worker request: {line[:200]}",
                       "fix": f"send one JSON object per line with \"op\" one of {', '.join(OPS)}"})
            return
        if req["op"] == "cancel":
            self.cancel(str(req.get("id")))
        elif req["op"] == "shutdown":
            self.stop("shutdown")
        else:
            self._requests.put(req)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            if job_id == self._running and self._tracker is not None:
                self._tracker.cancel()  # JobCancelled at the job's next progress step
            else:
                self._cancelled.add(job_id)  # still queued (or unknown): dropped when its turn comes

    def stop(self, reason: str) -> None:
        """Cancel the running job and end the loop (shutdown, end of stdin, SIGTERM)."""
        with self._lock:
            self._stop_reason = self._stop_reason or reason
            if self._tracker is not None:
                self._tracker.cancel()
        self._requests.put(None)  # wake the loop

    # ----- the main thread -------------------------------------------------------------------

    def serve(self) -> str:
        """Run requests until a stop or the idle exit; returns the exit reason (also emitted)."""
        self.emit({"event": "ready", "pid": os.getpid(), "version": __version__})
        idle_since, released = time.monotonic(), False
        while True:
            req = self._next(idle_since, released)
            if self._stop_reason:
                self._drop_queued(req)
                return self._exit(self._stop_reason)
            if req is None:  # an idle threshold passed
                idle = time.monotonic() - idle_since
                if self.idle_exit_s > 0 and idle >= self.idle_exit_s:
                    return self._exit("idle")
                self._release_memory("idle")  # the release threshold passed (it is the earlier one)
                released = True
                continue
            if req["op"] == "release":
                self._release_memory("asked")
                released = True
                continue
            self._run_job(req)
            idle_since, released = time.monotonic(), False

    def _next(self, idle_since: float, released: bool) -> dict[str, Any] | None:
        """The next request, or None when an idle threshold (exit, release) is reached first."""
        deadlines = []
        if self.idle_exit_s > 0:
            deadlines.append(idle_since + self.idle_exit_s)
        if self.release_after_s > 0 and not released:
            deadlines.append(idle_since + self.release_after_s)
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        try:
            return self._requests.get(timeout=timeout)
        except queue.Empty:
            return None

    def _release_memory(self, reason: str) -> bool:
        try:
            held = self._release()
        except Exception as exc:  # freeing memory must never end the worker
            print(f"orbitmesh worker: release failed: {exc}", file=sys.stderr, flush=True)
            held = False
        self.emit({"event": "released", "reason": reason, "models": bool(held)})
        return held

    def _exit(self, reason: str) -> str:
        self.emit({"event": "exit", "reason": reason})
        return reason

    def _drop_queued(self, taken: dict[str, Any] | None) -> None:
        """Answer the jobs that will not run (``taken``, already off the queue, first) as cancelled."""
        req = taken
        while True:
            if req is not None and req.get("op") == "submit":
                self.emit({"event": "cancelled", "id": req.get("id")})
            try:
                req = self._requests.get_nowait()
            except queue.Empty:
                return

    def _run_job(self, req: dict[str, Any]) -> None:
        job_id = req.get("id")
        if not isinstance(job_id, str) or not job_id:
            self.emit({"event": "error", "id": None, "message": "a submit without an id",
                       "fix": 'give every job a unique "id" string'})
            return

        def show(event: ProgressEvent) -> None:
            self.emit({"event": "progress", "id": job_id, "stage": event.stage, "step": event.step,
                       "total": event.total, "message": event.message, "eta_s": event.eta_s,
                       "progress": event.progress})

        tracker = ProgressTracker(listener=show)
        with self._lock:
            if job_id in self._cancelled or self._stop_reason:
                self._cancelled.discard(job_id)
                self.emit({"event": "cancelled", "id": job_id})
                return
            self._running, self._tracker = job_id, tracker
        self.emit({"event": "started", "id": job_id})
        try:
            request, settings = self._job_request(req)
            result = self._runner(request, settings, tracker)
        except JobCancelled:
            self.emit({"event": "cancelled", "id": job_id})
        except OrbitMeshError as exc:
            self.emit({"event": "error", "id": job_id, "message": exc.message, "fix": exc.fix})
        except Exception as exc:  # a bug or an out-of-memory error: this job fails, the worker lives on
            traceback.print_exc(file=sys.stderr)
            oom = "out of memory" in str(exc).lower() or isinstance(exc, MemoryError)
            self.emit({"event": "error", "id": job_id,
                       "message": f"{'out of memory' if oom else 'internal error'}: {type(exc).__name__}: {exc}",
                       "fix": "try a smaller mesh resolution or texture size" if oom else
                              "see generate.log in the job folder; please report it"})
        else:
            self.emit({"event": "done", "id": job_id, "result": result.to_dict()})
        finally:
            with self._lock:
                self._running, self._tracker = None, None
                self._cancelled.discard(job_id)

    def _job_request(self, req: dict[str, Any]) -> tuple["GenerateRequest", Settings]:
        """(GenerateRequest, Settings) of one submit; InputError when it is malformed."""
        from orbitmesh.pipeline.request import GenerateRequest

        values = req.get("settings") or {}
        if not isinstance(values, dict):
            raise InputError("settings must be a JSON object", fix='send "settings": {"seed": 7, ...}')
        request = GenerateRequest.from_settings(values)
        request.image_path = req.get("image_path")
        request.prompt = req.get("prompt")
        request.output = req.get("output")
        settings = self.settings.override(output_dir=req.get("output_dir") or None)
        return request, settings


def _protocol_streams() -> tuple[TextIO, TextIO]:
    """(requests, events): private copies of stdin and stdout for the protocol.

    fd 1 (and ``sys.stdout``) then point at stderr, so a stray print, from Python or a native library,
    cannot corrupt the event stream; fd 0 (and ``sys.stdin``) at the null device, because the mesh stage
    forks (:mod:`orbitmesh.mesh.isolate`) and a forked child closes ``sys.stdin``, whose lock the reader
    thread holds while it waits for the next request: the child would hang.
    """
    sys.stdout.flush()
    events = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    requests = os.fdopen(os.dup(sys.stdin.fileno()), "r", encoding="utf-8", errors="replace")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, sys.stdin.fileno())
    os.close(null)
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115  (for the life of the process)
    return requests, events


def run(args: argparse.Namespace) -> int:
    if args.idle_exit < 0 or args.release_after < 0:
        raise InputError("--idle-exit and --release-after must be 0 or more seconds", fix="e.g. --idle-exit 600")
    settings = settings_from_args(args)
    requests, events = _protocol_streams()

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event, default=str) + "\n")
        events.flush()

    from orbitmesh.native import preload_native_libraries

    preload_native_libraries()  # torch's import time is paid before "ready", not by the first job
    worker = Worker(settings, emit, idle_exit_s=args.idle_exit, release_after_s=args.release_after)

    def read() -> None:
        for line in requests:
            worker.take(line)
        worker.stop("eof")  # the parent is gone: nobody would read our results

    threading.Thread(target=read, name="orbitmesh-worker-stdin", daemon=True).start()
    # From a thread: the handler runs on the main thread, which may hold the locks stop() takes.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=worker.stop, args=("terminated",)).start())
    reason = worker.serve()
    print(f"orbitmesh worker {os.getpid()}: exit ({reason})", file=sys.stderr, flush=True)
    return 0
