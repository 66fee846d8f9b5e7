"""The add-on's module-level state for one Blender session, in one place (never saved; no bpy).

* :data:`ACTIVE`: running jobs, local job id -> backend handle (:class:`.backends.JobHandle`).
* :data:`LAST_HEALTH`: the last successful backend check, backend name -> its ``/health`` answer.
* :data:`SERVER`: the ``orbitmesh serve`` process this session started (``SERVER["proc"]``).
* :data:`WORKERS`: the warm "In Blender" worker processes this session started (:mod:`.worker`); the
  newest takes new jobs, older ones finish theirs and stop. :func:`stop_workers` ends them all
  (``unregister`` and Blender's exit).
* the job list (:func:`job_list`), set from the add-on's user folder in ``register()``.

:func:`request_cancel` is thread-safe: the Cancel button, Esc and ``unregister`` call it.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

from .jobs import JobList

if TYPE_CHECKING:
    from .backends import JobHandle
    from .worker import WarmWorker

ACTIVE: dict[str, "JobHandle"] = {}
LAST_HEALTH: dict[str, dict[str, Any]] = {}
SERVER: dict[str, subprocess.Popen | None] = {"proc": None}
WORKERS: list["WarmWorker"] = []
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


def stop_server(timeout: float = 5.0) -> bool:
    """Stop the server this session started; False when there is none running."""
    proc = SERVER.get("proc")
    if proc is None or proc.poll() is not None:
        return False
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
    SERVER["proc"] = None
    return True


def stop_workers(timeout: float = 3.0) -> int:
    """End every warm worker (a running job is cancelled; killed after ``timeout`` s). Returns how many ran."""
    workers = list(WORKERS)
    WORKERS.clear()
    running = [w for w in workers if w.alive]
    for worker in running:
        worker.stop(timeout)
    return len(running)


def retire_workers() -> None:
    """Warm workers take no new job and stop when their jobs have ended (the backend's configuration changed)."""
    for worker in list(WORKERS):
        worker.retire()
