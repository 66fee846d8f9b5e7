"""Pipelines: numbered stages run by one orchestrator (see :mod:`orbitmesh.pipeline.orchestrator`).

The mode table (:mod:`.modes`) and the request contract (:mod:`.request`) are torch-free; the
orchestrator's names are exported lazily so that importing a submodule imports nothing else.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Orchestrator", "Stage", "StageContext", "StageTiming"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from orbitmesh.pipeline import orchestrator

        return getattr(orchestrator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
