"""DINOv2 image encoder, built from a transformers ``Dinov2Config`` (never downloaded).

The reference feeds the encoder RGB in [0, 1] normalised with ImageNet mean/std only
(no resize, crop or rescale) and uses every output token (CLS included) as the condition.
"""

from __future__ import annotations

import math
import types

import torch
from torch import nn

from orbitmesh.models.lrm.config import EncoderConfig


def _legacy_interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Old DINO / transformers < 4.45 position interpolation: bicubic with scale factor (n + 0.1) / sqrt(N).

    transformers >= 4.45 resizes to the exact target size instead (the default here, and what the
    parity fixture uses); this samples slightly different source positions (~1e-2 apart on planes).
    Bound onto ``Dinov2Embeddings`` instances in place of their method.
    """
    num_patches = embeddings.shape[1] - 1
    num_positions = self.position_embeddings.shape[1] - 1
    if num_patches == num_positions and height == width:
        return self.position_embeddings
    class_pos_embed = self.position_embeddings[:, :1]
    patch_pos_embed = self.position_embeddings[:, 1:]
    dim = embeddings.shape[-1]
    patch = self.patch_embeddings.patch_size
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else patch
    new_h, new_w = height // patch_h + 0.1, width // patch_w + 0.1
    side = int(math.sqrt(num_positions))
    grid = patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    target_dtype = grid.dtype
    grid = nn.functional.interpolate(grid.to(torch.float32), scale_factor=(new_h / side, new_w / side),
                                     mode="bicubic", align_corners=False).to(target_dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((class_pos_embed, grid), dim=1)


def _int_if_whole(x: float) -> float | int:
    """transformers-5 configs type-check mlp_ratio as int."""
    return int(x) if float(x).is_integer() else x


class DinoEncoder(nn.Module):
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1 + (H/14)*(W/14), hidden) tokens (last hidden state)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        hf_config = Dinov2Config(
            hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads, mlp_ratio=_int_if_whole(config.mlp_ratio),
            patch_size=config.patch_size, image_size=config.image_size,
            layerscale_value=config.layerscale_value, layer_norm_eps=config.layer_norm_eps,
        )
        self.model = Dinov2Model(hf_config)
        if config.pos_interpolation == "legacy":
            emb = self.model.embeddings
            emb.interpolate_pos_encoding = types.MethodType(_legacy_interpolate_pos_encoding, emb)
        # Plain tuples, not buffers: the model can be built on the meta device and loaded by assignment.
        self.mean, self.std = config.normalize_mean, config.normalize_std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=image.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=image.device).view(1, 3, 1, 1)
        pixel_values = (image.float() - mean) / std
        pixel_values = pixel_values.to(self.model.embeddings.patch_embeddings.projection.weight.dtype)
        return self.model(pixel_values=pixel_values).last_hidden_state
