"""Where an imported mesh goes: bottom centre at the origin, largest dimension scaled to ``size``."""

from __future__ import annotations

from typing import Sequence


def fit_to_size(lo: Sequence[float], hi: Sequence[float], size: float) -> tuple[float, tuple[float, float, float]]:
    """(scale, offset) for a bounding box ``lo``..``hi`` (3 floats each): ``scale * (p + offset)`` puts the
    box's bottom centre at the origin and its largest extent at ``size`` (scale 1 for a flat point)."""
    extent = max(float(h) - float(lo_) for lo_, h in zip(lo, hi, strict=True))
    scale = float(size) / extent if extent > 0 else 1.0
    return scale, (-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2])
