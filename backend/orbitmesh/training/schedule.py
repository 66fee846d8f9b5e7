"""The training schedule: stages (render resolution, samples per ray) and a warmup + cosine LR.

Progress is measured in steps, or, with a time budget, by whichever of steps and wall time is
further along, so a run on a busy machine still walks through every stage and ends on time.
"""

from __future__ import annotations

import math

from orbitmesh.training.config import Stage


def progress_fraction(step: int, total_steps: int, elapsed_s: float, budget_s: float | None) -> float:
    """How far the run is, in [0, 1]."""
    frac = step / max(1, total_steps)
    if budget_s:
        frac = max(frac, elapsed_s / budget_s)
    return min(1.0, frac)


def stage_at(stages: list[Stage], fraction: float) -> tuple[int, Stage]:
    """(index, stage) active at ``fraction`` of the run; stage i covers its share of the total steps."""
    total = sum(s.steps for s in stages)
    edge = 0.0
    for i, st in enumerate(stages):
        edge += st.steps / total
        if fraction < edge - 1e-12:
            return i, st
    return len(stages) - 1, stages[-1]


def learning_rate(base_lr: float, step: int, warmup_steps: int, fraction: float, min_ratio: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_ratio * base_lr`` at fraction 1."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction)))
    return base_lr * (min_ratio + (1.0 - min_ratio) * cosine)
