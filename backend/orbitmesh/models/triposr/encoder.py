"""TripoSR's image tokenizer: a transformers ``ViTModel`` (DINO ViT-B/16), built from a config, never downloaded.

The reference reads the encoder's config.json from ``facebook/dino-vitb16``; its values are built
in here (:data:`BUILTIN_VIT_CONFIGS`). ``pretrained_model_name_or_path`` may also be a folder
holding a ViT ``config.json`` (relative paths resolve against the model folder), and
``vit_config`` gives the values directly. Input: RGB in [0, 1], ImageNet mean/std, position
embeddings interpolated to the input's patch grid; output: every token of the last hidden state
(CLS first). The pooler exists (its weights are in the checkpoints) but is unused.
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from orbitmesh.errors import ModelError
from orbitmesh.models.lrm.config import IMAGENET_MEAN, IMAGENET_STD
from orbitmesh.models.lrm.encoder import _legacy_interpolate_pos_encoding
from orbitmesh.models.triposr.config import ImageTokenizerConfig

# facebook/dino-vitb16 config.json (what the released TripoSR builds its encoder from).
DINO_VITB16: dict[str, Any] = {
    "model_type": "vit", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12, "image_size": 224, "patch_size": 16, "num_channels": 3,
    "qkv_bias": True,
}
BUILTIN_VIT_CONFIGS: dict[str, dict[str, Any]] = {"facebook/dino-vitb16": DINO_VITB16}
# config.json keys that are bookkeeping, not architecture (dropped before building the ViTConfig).
_BOOKKEEPING = ("architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "model_type")


def resolve_vit_config(config: ImageTokenizerConfig, base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ViT config.json values for ``config`` (disk and built-ins only; never the network)."""
    if config.vit_config is not None:
        return dict(config.vit_config)
    name = config.pretrained_model_name_or_path
    if name in BUILTIN_VIT_CONFIGS:
        return dict(BUILTIN_VIT_CONFIGS[name])
    folder = Path(name).expanduser()
    if not folder.is_absolute() and base_dir is not None:
        folder = Path(base_dir) / folder
    path = folder / "config.json" if folder.is_dir() else folder
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read the image tokenizer's ViT config {path}: {exc}",
                             fix="fix or replace that config.json") from exc
        if not isinstance(data, Mapping):
            raise ModelError(f"{path} is not a ViT config", fix="give a transformers ViT config.json")
        return dict(data)
    raise ModelError(f"unknown image tokenizer {name!r}: not built in, and no folder with a ViT config.json there",
                     fix=f"use {', '.join(BUILTIN_VIT_CONFIGS)} or a local folder holding the ViT's config.json")


def build_vit_config(values: Mapping[str, Any]):
    """A transformers ``ViTConfig`` from config.json values (bookkeeping keys dropped)."""
    from transformers import ViTConfig

    if values.get("model_type", "vit") != "vit":
        raise ModelError(f"the image tokenizer config is a {values['model_type']!r} model, not a ViT",
                         fix="give a transformers ViT config.json")
    kwargs = {k: v for k, v in values.items() if k not in _BOOKKEEPING}
    try:
        return ViTConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"invalid ViT config for the image tokenizer: {exc}", fix="fix the ViT config") from exc


def _interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of the stored position grid to the input's patch grid (transformers >= 4.45's rule).

    Bound onto ``ViTEmbeddings`` so every installed transformers version computes the same thing.
    """
    num_patches = embeddings.shape[1] - 1
    num_positions = self.position_embeddings.shape[1] - 1
    if num_patches == num_positions and height == width:
        return self.position_embeddings
    dim = embeddings.shape[-1]
    patch = self.patch_embeddings.patch_size
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else patch
    side = int(num_positions ** 0.5)
    grid = self.position_embeddings[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid, size=(height // patch_h, width // patch_w), mode="bicubic",
                                     align_corners=False)
    return torch.cat((self.position_embeddings[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


class ImageTokenizer(nn.Module):
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1 + (H/p)(W/p), hidden) tokens. ``model`` is the ``ViTModel``."""

    def __init__(self, config: ImageTokenizerConfig, vit_config: Mapping[str, Any]) -> None:
        super().__init__()
        from transformers import ViTModel

        self.model = ViTModel(build_vit_config(vit_config))  # with the pooler, as the released checkpoint
        if config.enable_gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        interpolate = _legacy_interpolate_pos_encoding if config.pos_interpolation == "legacy" \
            else _interpolate_pos_encoding
        emb = self.model.embeddings
        emb.interpolate_pos_encoding = types.MethodType(interpolate, emb)
        # Plain tuples, not buffers: the model can be built on the meta device and loaded by assignment.
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        pixel_values = (image - mean) / std
        pixel_values = pixel_values.to(self.model.embeddings.patch_embeddings.projection.weight.dtype)
        return self.model(pixel_values=pixel_values, interpolate_pos_encoding=True).last_hidden_state
