"""The renderer's activations by name, as the reference's ``get_activation`` resolves them.

``exp``, ``sigmoid``, ``tanh``, ``softplus``, ``none`` (or null), ``trunc_exp`` (exp whose gradient
is taken at min(x, 15), threestudio's), else any ``torch.nn.functional`` function by name.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from orbitmesh.errors import ModelError
from orbitmesh.models.triposr.config import ACTIVATIONS


class _TruncExp(torch.autograd.Function):
    """exp(x) forward; the backward uses exp(min(x, 15)) so large densities cannot blow up gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


_NAMED: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x, "exp": torch.exp, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softplus": F.softplus,
    "trunc_exp": trunc_exp,
}
assert tuple(_NAMED) == ACTIVATIONS  # the config validates names against that list without importing torch


def get_activation(name: str | None, key: str = "activation") -> Callable[[torch.Tensor], torch.Tensor]:
    """Activation ``name`` (case-insensitive); an unknown name is a ModelError naming ``key``."""
    if name is None:
        return _NAMED["none"]
    fn = _NAMED.get(name.lower()) or getattr(F, name.lower(), None)
    if not callable(fn):
        raise ModelError(f"unknown TripoSR {key} {name!r}",
                         fix=f"use one of {', '.join(_NAMED)} or a torch.nn.functional name")
    return fn
