"""Pipelines: numbered stages run by one orchestrator (see :mod:`orbitmesh.pipeline.orchestrator`)."""

from orbitmesh.pipeline.orchestrator import Orchestrator, Stage, StageContext, StageTiming

__all__ = ["Orchestrator", "Stage", "StageContext", "StageTiming"]
