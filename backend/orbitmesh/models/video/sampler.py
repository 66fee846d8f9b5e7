"""SV3D sampling as in SGM: VScalingWithEDMcNoise denoiser, EDM sigmas, Euler steps, triangle guidance.

* Denoiser: ``c_skip = 1/(s^2+1)``, ``c_out = -s/sqrt(s^2+1)``, ``c_in = 1/sqrt(s^2+1)``,
  ``c_noise = 0.25 ln s``; ``denoised = unet(x c_in ++ cond_latent, c_noise) c_out + x c_skip``.
* Sigmas: EDM (Karras) discretisation, sigma_min 0.002, sigma_max 700, rho 7, then 0 appended.
* Euler EDM sampler with s_churn 0 (SGM default): ``x += (x - D(x)) / sigma * (sigma_next - sigma)``.
* TrianglePredictionGuider: guidance scale per frame is a triangle wave 1 -> max -> 1 across
  the frames; ``D = uc + scale * (c - uc)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

SIGMA_MIN = 0.002
SIGMA_MAX = 700.0
RHO = 7.0


@dataclass(frozen=True)
class DenoiserScaling:
    """(c_skip, c_out, c_in, c_noise) for sigma, each shaped like sigma."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def v_scaling_edm_c_noise(sigma: torch.Tensor) -> DenoiserScaling:
    """SGM ``VScalingWithEDMcNoise``."""
    sigma = sigma.float()
    c_skip = 1.0 / (sigma**2 + 1.0)
    c_out = -sigma / (sigma**2 + 1.0) ** 0.5
    c_in = 1.0 / (sigma**2 + 1.0) ** 0.5
    return DenoiserScaling(c_skip, c_out, c_in, 0.25 * sigma.log())


def _per_frame(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """sigma (N,) -> broadcastable to x (N, C, H, W)."""
    return sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def denoise(unet, x: torch.Tensor, sigma: torch.Tensor, cond_latent: torch.Tensor, context: torch.Tensor,
            y: torch.Tensor, num_frames: int,
            image_only_indicator: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One denoiser call, SGM layout (videos flattened to frames).

    x (B*F, 4, h, w) noisy latents; sigma (B*F,); cond_latent (B*F, 4, h, w); context
    (B*F, L, D) or (B, L, D); y (B*F, adm). Returns (denoised, {unet_input, c_noise, unet_output}).
    """
    s = v_scaling_edm_c_noise(sigma)
    unet_input = torch.cat([x * _per_frame(x, s.c_in), cond_latent.to(x.dtype)], dim=1)
    batch = x.shape[0] // num_frames
    dtype = next(unet.parameters()).dtype
    out = unet(unet_input.to(dtype).reshape(batch, num_frames, *unet_input.shape[1:]), s.c_noise.to(dtype),
               context.to(dtype), y.to(dtype),
               image_only_indicator=None if image_only_indicator is None else image_only_indicator.to(dtype),
               return_dict=False)[0]
    out = out.flatten(0, 1).to(x.dtype)
    denoised = out * _per_frame(x, s.c_out) + x * _per_frame(x, s.c_skip)
    return denoised, {"unet_input": unet_input, "c_noise": s.c_noise, "unet_output": out}


def edm_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
               rho: float = RHO) -> torch.Tensor:
    """(steps + 1,) float32: Karras sigmas from sigma_max down to sigma_min, then 0."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def triangle_scales(num_frames: int, min_scale: float = 1.0, max_scale: float = 2.5) -> torch.Tensor:
    """(F,) SGM ``TrianglePredictionGuider`` scales: 1 -> max_scale -> 1 across the frames (period 1)."""
    t = torch.linspace(0, 1, num_frames)
    triangle = 2 * (t - torch.floor(t + 0.5)).abs()  # 0 at the ends, 1 in the middle
    return min_scale + (max_scale - min_scale) * triangle


def guided(denoised_c: torch.Tensor, denoised_uc: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(B*F, ...) cond/uncond predictions, (F,) scales -> uc + scale * (c - uc)."""
    frames = scales.numel()
    s = scales.to(denoised_c).repeat(denoised_c.shape[0] // frames)
    return denoised_uc + _per_frame(denoised_c, s) * (denoised_c - denoised_uc)


def euler_edm_sample(denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                     sigmas: torch.Tensor, on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Euler EDM (s_churn 0): ``x = noise * sqrt(1 + sigma_0^2)``; for each step
    ``x += (x - D(x, sigma)) / sigma * (sigma_next - sigma)``. ``on_step(i, n)`` runs after step i
    (1-based) and may raise to cancel."""
    x = noise * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    n = len(sigmas) - 1
    for i in range(n):
        sigma = sigmas[i]
        d = (x - denoiser(x, sigma.expand(x.shape[0]).to(x.device))) / sigma
        x = x + d * (sigmas[i + 1] - sigma)
        if on_step is not None:
            on_step(i + 1, n)
    return x
