"""One progress/cancel callback that flows through every stage.

A stage calls ``progress(stage, step, total, message)``; the callback may raise
:class:`~orbitmesh.errors.JobCancelled` to stop the job between steps. A
:class:`ProgressTracker` is told the job's stage list by the orchestrator (``plan``) and adds the
overall ``progress`` (0..1, weighted by :mod:`orbitmesh.pipeline.modes`) to every event.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from orbitmesh.errors import JobCancelled, JobInterrupted


class ProgressCallback(Protocol):
    def __call__(self, stage: str, step: int, total: int, message: str = "") -> None: ...


def null_progress(stage: str, step: int, total: int, message: str = "") -> None:
    """A callback that reports nowhere and never cancels."""


@dataclass
class ProgressEvent:
    stage: str
    step: int
    total: int
    message: str
    time: float
    eta_s: float | None = None
    progress: float = 0.0  # overall 0..1 over the job's stages; never decreases within a job

    def to_dict(self) -> dict:
        return {"stage": self.stage, "step": self.step, "total": self.total, "message": self.message,
                "time": self.time, "eta_s": self.eta_s, "progress": self.progress}


@dataclass
class ProgressTracker:
    """A callback object with a cancel flag, the latest event and a per-stage ETA.

    Thread-safe: a worker calls it, a UI/server thread reads ``latest`` and calls ``cancel()``.
    """

    listener: Callable[[ProgressEvent], None] | None = None
    latest: ProgressEvent | None = None
    stages: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _cancel_error: JobCancelled | None = None
    _stage_start: dict = field(default_factory=dict)

    def plan(self, stages: Sequence[str], weights: Sequence[float] | None = None) -> None:
        """The job's stages in order and their progress weights (default 1 each); the orchestrator calls this
        before the first stage with the weights of :mod:`orbitmesh.pipeline.modes`."""
        self.stages = list(stages)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.stages)

    def cancel(self, error: JobCancelled | None = None) -> None:
        """Stop the job at its next progress step with ``error`` (default: cancelled by the user; a stopping
        server passes JobInterrupted so the job stays queued)."""
        if not self._cancel.is_set():
            self._cancel_error = error
        self._cancel.set()

    @property
    def interrupted(self) -> bool:
        """Cancelled because the server stops (the job is queued again), not by the user."""
        return isinstance(self._cancel_error, JobInterrupted)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def __call__(self, stage: str, step: int, total: int, message: str = "") -> None:
        now = time.time()
        start = self._stage_start.setdefault(stage, (now, step))
        eta = None
        if total > 0 and step > start[1]:
            rate = (now - start[0]) / (step - start[1])
            eta = max(0.0, rate * (total - step))
        done = max(self.latest.progress if self.latest else 0.0,
                   weighted_progress(self.stages, self.weights, stage, step, total))
        self.latest = ProgressEvent(stage, step, total, message, now, eta, done)
        if self.listener is not None:
            self.listener(self.latest)
        self.raise_if_cancelled()

    def raise_if_cancelled(self) -> bool:
        """Raise the cancel's error (JobCancelled, or JobInterrupted from a stopping server); False otherwise."""
        if self._cancel.is_set():
            error = self._cancel_error
            raise type(error)(error.message) if error is not None else JobCancelled()
        return False


def weighted_progress(stages: Sequence[str], weights: Sequence[float], stage: str, step: int, total: int) -> float:
    """0..1 over ``stages`` (each with its weight) at ``step``/``total`` of ``stage``; below 1 until the job is
    done. A stage not in the list gives 0."""
    if stage not in stages:
        return 0.0
    index = list(stages).index(stage)
    frac = min(max(step / total, 0.0), 1.0) if total > 0 else 0.0
    done = sum(weights[:index]) + weights[index] * frac
    return round(min(done / sum(weights), 0.999), 4)
