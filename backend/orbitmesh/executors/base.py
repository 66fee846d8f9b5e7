"""The executor contract, and :func:`make_executor` (``--ray`` / ``--workers`` -> an executor)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from orbitmesh.errors import InputError

if TYPE_CHECKING:
    from orbitmesh.pipeline.request import GenerateRequest, GenerateResult
    from orbitmesh.progress import ProgressTracker
    from orbitmesh.settings import Settings

# One job: (request, settings with output_dir = where its job folder goes, tracker for progress and cancel).
Runner = Callable[["GenerateRequest", "Settings", "ProgressTracker"], "GenerateResult"]
RAY_INSTALL = 'pip install "orbitmesh[ray]"'


class Executor(Protocol):
    name: str  # "local" or "ray"
    workers: int  # how many jobs run at once (callers start this many threads)

    def run(self, request: GenerateRequest, settings: Settings, tracker: ProgressTracker) -> GenerateResult:
        """Run one job on a free worker (blocking until one is free); raises like ``generate`` (JobCancelled,
        OrbitMeshError) and WorkerLost when the worker died under the job."""

    def close(self) -> None:
        """Stop the workers (models released)."""


def make_executor(ray: str | None = None, workers: int | None = None) -> Executor:
    """``ray=None``: the local executor (this process, models loaded once); ``"local"``, ``"auto"`` or an
    address: a Ray pool of ``workers`` actors (default: one per GPU, or 2 CPU workers)."""
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}", fix="e.g. --workers 2")
    if ray is None:
        if workers not in (None, 1):
            raise InputError("--workers above 1 needs --ray (one process runs one job at a time)",
                             fix="add --ray local to run several workers on this machine")
        from orbitmesh.executors.local import LocalExecutor

        return LocalExecutor()
    from orbitmesh.executors.ray_pool import RayExecutor

    return RayExecutor.start(ray, workers=workers)
