"""SV3D's per-frame vector conditioning (the SGM ``label_emb`` input, called ``y``).

sv3d_p: ``sinusoid_256(cond_aug) ++ sinusoid_512(polar_rad) ++ sinusoid_512(azimuth_rad)``
(1280 numbers per frame); sv3d_u: ``sinusoid_256(cond_aug)`` only (256). The sinusoid is
SGM's ``timestep_embedding``: ``[cos(t f), sin(t f)]`` with ``f = 10000^(-i/half)``.
"""

from __future__ import annotations

import math

import torch

COND_AUG_DIM = 256
CAMERA_DIM = 512
ADM_SV3D_P = COND_AUG_DIM + 2 * CAMERA_DIM  # 1280
ADM_SV3D_U = COND_AUG_DIM  # 256


def sinusoid(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) float -> (N, dim) float32 ``[cos, sin]`` embedding (SGM ``timestep_embedding``)."""
    values = values.reshape(-1).float()
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    args = values[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def vector_conditioning(cond_aug: torch.Tensor, polars_rad: torch.Tensor | None = None,
                        azimuths_rad: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame ``y``: (F,) inputs -> (F, 1280) for sv3d_p, (F, 256) for sv3d_u (no cameras)."""
    parts = [sinusoid(cond_aug, COND_AUG_DIM)]
    if (polars_rad is None) != (azimuths_rad is None):
        raise ValueError("give both polars_rad and azimuths_rad (sv3d_p) or neither (sv3d_u)")
    if polars_rad is not None:
        n = parts[0].shape[0]
        if polars_rad.numel() != n or azimuths_rad.numel() != n:
            raise ValueError(f"need one polar and one azimuth per frame ({n}), got "
                             f"{polars_rad.numel()} and {azimuths_rad.numel()}")
        parts += [sinusoid(polars_rad, CAMERA_DIM), sinusoid(azimuths_rad, CAMERA_DIM)]
    return torch.cat(parts, dim=-1)
