"""The orchestrator: runs numbered stages in order inside a job folder.

Each stage is an object with a ``name`` (from :mod:`orbitmesh.pipeline.modes`), the
:class:`~orbitmesh.pipeline.state.PipelineState` fields it ``needs`` and ``gives``, and
``run(ctx)``; it reads what earlier stages left in ``ctx.state``, writes its own outputs there
and its artefacts into the job folder, and reports through ``ctx.progress`` (which may raise
JobCancelled). Before the first stage runs, the orchestrator checks that every need is met.
The orchestrator times every stage, keeps ``job.json`` current (status, stage,
timings, error) and leaves the job folder consistent on success, failure or cancel.
"""

from __future__ import annotations

import time
import traceback
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, Union

from orbitmesh.errors import JobCancelled, OrbitMeshError
from orbitmesh.jobs import JobFolder
from orbitmesh.pipeline import modes
from orbitmesh.pipeline.state import PipelineState
from orbitmesh.progress import ProgressCallback, null_progress

# A need is a field name, or a tuple of names any one of which will do.
Need = Union[str, tuple]


@dataclass
class StageContext:
    job: JobFolder
    progress: ProgressCallback = null_progress
    state: PipelineState = field(default_factory=PipelineState)

    def __post_init__(self) -> None:
        if isinstance(self.state, dict):
            self.state = PipelineState(**self.state)


class Stage(Protocol):
    name: str
    needs: tuple[Need, ...]
    gives: tuple[str, ...]

    def run(self, ctx: StageContext) -> None: ...


def check_plan(stages: Sequence[Stage], given: set[str]) -> None:
    """Raise ValueError naming the stage and the field when a stage needs what nothing before it gives."""
    known = PipelineState.field_names()
    have = set(given)
    for stage in stages:
        for need in getattr(stage, "needs", ()):
            options = need if isinstance(need, tuple) else (need,)
            unknown = [o for o in (*options, *getattr(stage, "gives", ())) if o not in known]
            if unknown:
                raise ValueError(f"stage {stage.name!r} names unknown state fields {unknown}")
            if not have.intersection(options):
                raise ValueError(f"stage {stage.name!r} needs {' or '.join(options)}, which no earlier stage gives")
        have.update(getattr(stage, "gives", ()))


@dataclass
class StageTiming:
    index: int
    name: str
    seconds: float


def cancel_scope(progress: object) -> AbstractContextManager:
    """Within a stage, a cancel of ``progress`` (a ProgressTracker: ``raise_if_cancelled``) also kills the mesh
    layer's isolated child (xatlas) at once instead of after it finishes; a callback without the flag changes
    nothing. A context variable: it holds in the thread that runs the stage."""
    check = getattr(progress, "raise_if_cancelled", None)
    if check is None:
        return nullcontext()
    from orbitmesh.mesh.isolate import cancel_check

    return cancel_check(check)  # raises the tracker's own error: a stopping server's job stays queued


class Orchestrator:
    def __init__(self, stages: Sequence[Stage]) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        self.stages = list(stages)

    def run(self, job: JobFolder, progress: ProgressCallback = null_progress,
            state: PipelineState | dict[str, Any] | None = None) -> tuple[PipelineState, list[StageTiming]]:
        """Run every stage; returns (state, timings). Re-raises the failure after recording it."""
        if not isinstance(state, PipelineState):
            state = PipelineState(**(state or {}))
        check_plan(self.stages, state.given())
        ctx = StageContext(job=job, progress=progress, state=state)
        timings: list[StageTiming] = []
        names = [s.name for s in self.stages]
        if callable(getattr(progress, "plan", None)):
            progress.plan(names, modes.stage_weights(names))  # the tracker's overall progress
        job.update(status="running", started=time.time(), stages=names)
        current = None
        try:
            for index, stage in enumerate(self.stages, start=1):
                current = stage.name
                job.update(stage=f"{index:02d}-{stage.name}")
                progress(stage.name, 0, 1, "starting")
                t0 = time.perf_counter()
                with cancel_scope(progress):
                    stage.run(ctx)
                timings.append(StageTiming(index, stage.name, time.perf_counter() - t0))
                job.record["timings"][f"{index:02d}-{stage.name}"] = round(timings[-1].seconds, 4)
                job.save()
        except JobCancelled as exc:  # by the user, or a stopping server (JobInterrupted)
            job.update(status="cancelled", error={"stage": current, "message": exc.message},
                       finished=time.time())
            raise
        except OrbitMeshError as exc:
            job.update(status="failed", error={"stage": current, **exc.to_dict()}, finished=time.time())
            raise
        except Exception as exc:  # unexpected: keep the traceback in job.json for bug reports
            job.update(status="failed", finished=time.time(), error={
                "stage": current, "error": type(exc).__name__, "message": str(exc),
                "traceback": traceback.format_exc(limit=20)})
            raise
        job.update(status="done", stage=None, finished=time.time())
        return ctx.state, timings
