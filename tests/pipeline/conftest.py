"""Helpers shared by the pipeline tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest


def _mask_iou(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="session")
def mask_iou() -> Callable[..., float]:
    """mask_iou(a, b) -> intersection over union of two boolean masks (NumPy arrays or torch tensors)."""
    return _mask_iou
