"""Training checkpoints: model, EMA, optimiser, step, elapsed time and RNG state in one file.

Written atomically (temp file + rename), so an interrupted save never corrupts the last good
checkpoint; resuming restores everything needed to continue bit-for-bit on the same device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from orbitmesh import atomic
from orbitmesh.errors import InputError

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, *, model, ema, optimizer, step: int, elapsed_s: float,
                    generator: torch.Generator, config: dict, history: list[dict]) -> Path:
    state = {
        "format": "orbitmesh-train-1",
        "model": model.state_dict(),
        "lrm_config": model.config.to_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "elapsed_s": elapsed_s,
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "config": config,
        "history": history,
    }
    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling errors come in many types
        raise InputError(f"cannot read the training checkpoint {path}: {exc}",
                         fix="delete it to start over, or point at another run folder") from exc
    if not isinstance(state, dict) or state.get("format") != "orbitmesh-train-1":
        raise InputError(f"{path} is not an OrbitMesh training checkpoint",
                         fix="resume from a run folder written by `orbitmesh train`")
    return state
