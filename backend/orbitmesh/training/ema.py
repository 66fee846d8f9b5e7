"""Exponential moving average of model weights (the exported model is the EMA)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a frozen copy of the model whose float tensors track the live weights.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` so early updates are not dominated
    by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        floats, targets = [], []
        for name, value in self.shadow.state_dict().items():
            if value.dtype.is_floating_point:
                floats.append(value)
                targets.append(live[name].to(value.dtype))
            else:
                value.copy_(live[name])
        torch._foreach_lerp_(floats, targets, 1.0 - d)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.updates = state["updates"]
        self.shadow.load_state_dict(state["shadow"])
