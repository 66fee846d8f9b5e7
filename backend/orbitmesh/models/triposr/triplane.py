"""TripoSR's triplane parts: learned plane tokens, the upsampling deconv, plane sampling and the NeRF MLP.

Planes (N, 3, C, H, W) are xy, xz, yz: a world point p in [-radius, radius]^3 becomes
q = p / radius and plane k is sampled at grid_sample coordinates (q[a], q[b]) for (a, b) in
:data:`PLANE_AXES` (bilinear, align_corners False, zeros outside). Note the third plane is
indexed (y, z), where the VFusion3D LRM's is (z, y). Module and parameter names follow the
reference (``tokenizer.embeddings``, ``post_processor.upsample``, ``decoder.layers.N``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from orbitmesh.models.triposr.config import DecoderConfig, PostProcessorConfig, TokenizerConfig

PLANE_AXES = ((0, 1), (0, 2), (1, 2))


class Triplane1DTokenizer(nn.Module):
    """Learned (3, C, H, W) plane embeddings, flattened to tokens (N, C, 3 H W) and back."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.plane_size, self.num_channels = config.plane_size, config.num_channels
        self.embeddings = nn.Parameter(
            torch.randn(3, config.num_channels, config.plane_size, config.plane_size) / math.sqrt(config.num_channels))

    def forward(self, batch_size: int) -> torch.Tensor:
        """-> tokens (N, C, 3 H W), plane-major then row-major."""
        c = self.num_channels
        tokens = self.embeddings.permute(1, 0, 2, 3).reshape(1, c, -1)
        return tokens.expand(batch_size, -1, -1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, C, 3 H W) -> planes (N, 3, C, H, W)."""
        n, c, _ = tokens.shape
        s = self.plane_size
        return tokens.reshape(n, c, 3, s, s).permute(0, 2, 1, 3, 4)


class TriplaneUpsampleNetwork(nn.Module):
    """planes (N, 3, Ci, H, W) -> (N, 3, Co, 2H, 2W) through one ConvTranspose2d(k=2, s=2) shared by the planes."""

    def __init__(self, config: PostProcessorConfig) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(config.in_channels, config.out_channels, kernel_size=2, stride=2)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        n = planes.shape[0]
        out = self.upsample(planes.reshape(n * 3, *planes.shape[2:]))
        return out.reshape(n, 3, *out.shape[1:])


def sample_planes(planes: torch.Tensor, points: torch.Tensor, radius: float, reduction: str = "concat"
                  ) -> torch.Tensor:
    """planes (N, 3, C, H, W), world points (N, P, 3) -> features (N, P, 3C) (concat) or (N, P, C) (mean).

    The arithmetic is the reference's: q = (p + r) / 2r * 2 - 1, one grid_sample per plane.
    """
    n, _, c, h, w = planes.shape
    m = points.shape[1]
    q = (points - (-radius)) / (radius - (-radius)) * 2 + (-1)
    uv = torch.stack([q[..., list(ax)] for ax in PLANE_AXES], dim=1).reshape(n * 3, 1, m, 2)
    feats = F.grid_sample(planes.reshape(n * 3, c, h, w), uv.to(planes.dtype), align_corners=False, mode="bilinear")
    feats = feats.reshape(n, 3, c, m)
    if reduction == "mean":
        return feats.mean(dim=1).permute(0, 2, 1)
    return feats.permute(0, 3, 1, 2).reshape(n, m, 3 * c)


class NeRFMLP(nn.Module):
    """Plane features (..., in) -> raw (..., 4): density first, then 3 colour features.

    ``plane_weights`` / ``decode_hidden`` let :class:`orbitmesh.models.lrm.grid.GridTables` evaluate
    it per plane on grids (the first Linear is a sum over planes).
    """

    def __init__(self, config: DecoderConfig, feature_reduction: str = "concat") -> None:
        super().__init__()
        self.reduction = feature_reduction
        act = {"relu": nn.ReLU, "silu": nn.SiLU}[config.activation]
        sizes = [config.in_channels] + [config.n_neurons] * config.n_hidden_layers
        layers: list[nn.Module] = []
        for i in range(config.n_hidden_layers):
            layers += [self._linear(sizes[i], sizes[i + 1], config), act()]
        layers.append(self._linear(config.n_neurons, 4, config))
        self.layers = nn.Sequential(*layers)

    @staticmethod
    def _linear(dim_in: int, dim_out: int, config: DecoderConfig) -> nn.Linear:
        layer = nn.Linear(dim_in, dim_out, bias=config.bias)
        if config.weight_init == "kaiming_uniform":
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        if config.bias and config.bias_init == "zero":
            nn.init.zeros_(layer.bias)
        return layer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (..., in) -> raw outputs (..., 4)."""
        shape = features.shape[:-1]
        out = self.layers(features.reshape(-1, features.shape[-1]))
        return out.reshape(*shape, 4)

    def plane_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first Linear split per plane: weights (3, C, H) and bias (H,), float32.

        concat: ``W [f_xy; f_xz; f_yz] = sum_p W_p f_p``; mean: ``W (sum_p f_p) / 3 = sum_p (W / 3) f_p``.
        """
        first = self.layers[0]
        w = first.weight.float()  # (H, in)
        bias = first.bias.float() if first.bias is not None else torch.zeros(w.shape[0], device=w.device)
        if self.reduction == "mean":
            return (w.t() / 3).expand(3, -1, -1), bias
        return w.t().reshape(3, -1, w.shape[0]), bias

    def decode_hidden(self, hidden: torch.Tensor, outputs: int | None = None) -> torch.Tensor:
        """First-layer pre-activations (M, H) -> raw outputs (M, outputs or 4) float32 (density first).

        ``hidden`` is overwritten (in-place activations).
        """
        layers = list(self.layers)
        last = layers[-1]
        x = hidden.to(last.weight.dtype)
        for layer in layers[1:-1]:
            if isinstance(layer, nn.ReLU):
                x = torch.relu_(x)
            elif isinstance(layer, nn.SiLU):
                x = F.silu(x, inplace=True)
            else:
                x = layer(x)
        w = last.weight if outputs is None else last.weight[:outputs]
        b = last.bias if outputs is None or last.bias is None else last.bias[:outputs]
        return F.linear(x, w, b).float()
