"""The orchestrator: runs numbered stages in order inside a job folder.

Each stage is an object with a ``name`` and ``run(ctx)``; it reads what earlier stages
left in ``ctx.state``, writes its own outputs there and its artefacts into the job
folder, and reports through ``ctx.progress`` (which may raise JobCancelled).
The orchestrator times every stage, keeps ``job.json`` current (status, stage,
timings, error) and leaves the job folder consistent on success, failure or cancel.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from orbitmesh.errors import JobCancelled, OrbitMeshError
from orbitmesh.jobs import JobFolder
from orbitmesh.progress import ProgressCallback, null_progress


@dataclass
class StageContext:
    job: JobFolder
    progress: ProgressCallback = null_progress
    state: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    name: str

    def run(self, ctx: StageContext) -> None: ...


@dataclass
class StageTiming:
    index: int
    name: str
    seconds: float


class Orchestrator:
    def __init__(self, stages: Sequence[Stage]) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        self.stages = list(stages)

    def run(self, job: JobFolder, progress: ProgressCallback = null_progress,
            state: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[StageTiming]]:
        """Run every stage; returns (state, timings). Re-raises the failure after recording it."""
        ctx = StageContext(job=job, progress=progress, state=dict(state or {}))
        timings: list[StageTiming] = []
        job.update(status="running", started=time.time(), stages=[s.name for s in self.stages])
        current = None
        try:
            for index, stage in enumerate(self.stages, start=1):
                current = stage.name
                job.update(stage=f"{index:02d}-{stage.name}")
                progress(stage.name, 0, 1, "starting")
                t0 = time.perf_counter()
                stage.run(ctx)
                timings.append(StageTiming(index, stage.name, time.perf_counter() - t0))
                job.record["timings"][f"{index:02d}-{stage.name}"] = round(timings[-1].seconds, 4)
                job.save()
        except JobCancelled:
            job.update(status="cancelled", error={"stage": current, "message": "cancelled by the user"},
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
