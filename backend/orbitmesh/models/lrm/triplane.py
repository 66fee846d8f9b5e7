"""Triplane feature sampling and the MLP decoder (EG3D's OSGDecoder as used by VFusion3D).

Planes are (N, 3, C, H, W) with axes xy, xz, zy; points in [-box_warp/2, box_warp/2]^3.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

# For each plane, the two point coordinates that index it (grid_sample's x, y).
PLANE_AXES = ((0, 1), (0, 2), (2, 1))


def sample_from_planes(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """planes (N, 3, C, H, W), points (N, M, 3) -> features (N, 3, M, C), bilinear, zeros outside.

    Always float32 (as the reference): bilinear weights in half precision blur the field.
    """
    n, n_planes, c, h, w = planes.shape
    m = points.shape[1]
    coords = (2.0 / box_warp) * points.float()
    proj = torch.stack([coords[..., list(ax)] for ax in PLANE_AXES], dim=1)  # (N, 3, M, 2)
    proj = proj.reshape(n * n_planes, 1, m, 2)
    feats = F.grid_sample(planes.reshape(n * n_planes, c, h, w).float(), proj, mode="bilinear",
                          padding_mode="zeros", align_corners=False)  # (3N, C, 1, M)
    return feats.permute(0, 3, 2, 1).reshape(n, n_planes, m, c)


class TriplaneDecoder(nn.Module):
    """Concatenated plane features (3C) -> raw (sigma, rgb) through a ReLU MLP.

    ``net`` matches the reference ``synthesizer.decoder.net`` (Linear at indices 0, 2, 4, 6).
    """

    def __init__(self, n_features: int, hidden_dim: int = 64, num_layers: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(3 * n_features, hidden_dim), nn.ReLU(),
            *itertools.chain(*[[nn.Linear(hidden_dim, hidden_dim), nn.ReLU()] for _ in range(num_layers - 2)]),
            nn.Linear(hidden_dim, 1 + 3),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """features (N, 3, M, C) -> {'rgb': (N, M, 3) in [-0.001, 1.001], 'sigma': (N, M, 1) raw}."""
        n, n_planes, m, c = features.shape
        x = features.permute(0, 2, 1, 3).reshape(n * m, n_planes * c)
        x = self.net(x.to(self.net[0].weight.dtype)).float().view(n, m, -1)
        return split_output(x)

    def plane_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first Linear split per plane: weights (3, C, H) and bias (H,), float32.

        ``net[0](concat(f_xy, f_xz, f_zy)) == sum_p f_p @ weights[p] + bias``: the grid query
        projects each plane on its own (see :mod:`orbitmesh.models.lrm.grid`).
        """
        w = self.net[0].weight.float()  # (H, 3C)
        return w.t().reshape(3, -1, w.shape[0]), self.net[0].bias.float()

    def decode_hidden(self, hidden: torch.Tensor, outputs: int | None = None) -> torch.Tensor:
        """First-layer pre-activations (M, H) -> raw outputs (M, outputs or 4) float32 (sigma first).

        ``outputs=1`` computes the density channel only. ``hidden`` is overwritten.
        """
        layers = list(self.net)
        last = layers[-1]
        x = hidden.to(last.weight.dtype)
        for layer in layers[1:-1]:  # in-place ReLUs: ``hidden`` is scratch
            x = torch.relu_(x) if isinstance(layer, nn.ReLU) else layer(x)
        w, b = (last.weight, last.bias) if outputs is None else (last.weight[:outputs], last.bias[:outputs])
        return torch.nn.functional.linear(x, w, b).float()


def split_output(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Raw decoder outputs (..., 4) -> {'rgb': (..., 3) widened sigmoid, 'sigma': (..., 1) raw}."""
    rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001  # MipNeRF's widened sigmoid
    return {"rgb": rgb, "sigma": x[..., 0:1]}


def activate_density(raw_sigma: torch.Tensor) -> torch.Tensor:
    """softplus(raw - 1): the density the renderer and the mesh threshold use."""
    return F.softplus(raw_sigma - 1)
