"""LRM configuration: every size of the architecture in one dataclass, plus presets.

``vfusion3d`` is the released VFusion3D model (DINOv2-base encoder, 16x1024 triplane
transformer, 3 x 80 x 64 x 64 planes). The tiny presets exist for tests and for the
``tiny-random`` plumbing model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from orbitmesh.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderConfig:
    """DINOv2 (transformers ``Dinov2Model``) sizes. ``image_size`` sets the stored position grid
    (518 -> 37x37 for dinov2-base); inputs of other sizes interpolate it."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    mlp_ratio: int = 4
    patch_size: int = 14
    image_size: int = 518
    layerscale_value: float = 1.0
    layer_norm_eps: float = 1e-6
    # Position-embedding interpolation. "size": bicubic to the exact patch grid, as transformers
    # >= 4.45 (the reference fixture was made with 4.46) and 5.x do; "legacy": the older DINO
    # scale factor (n + 0.1) / sqrt(N) of transformers < 4.45, for checkpoints trained with it.
    pos_interpolation: str = "size"
    normalize_mean: tuple[float, float, float] = IMAGENET_MEAN
    normalize_std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class LRMConfig:
    """Every size of the VFusion3D LRM, plus the rendering/meshing defaults that go with the weights."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    camera_embed_dim: int = 1024
    transformer_dim: int = 1024
    transformer_layers: int = 16
    transformer_heads: int = 16
    transformer_eps: float = 1e-6
    mlp_ratio: float = 4.0
    triplane_low_res: int = 32
    triplane_high_res: int = 64
    triplane_dim: int = 80
    decoder_hidden_dim: int = 64
    decoder_layers: int = 4
    samples_per_ray: int = 128  # half stratified, half importance
    box_warp: float = 2.0
    bbox_min: float = -1.0
    bbox_max: float = 1.0
    # Inputs and outputs that belong to the weights.
    input_size: int = 512  # encoder input (composited on white, [0, 1])
    source_camera_distance: float = 1.0
    source_focal: float = 0.75  # fx = fy, normalised by the image size (384 / 512)
    mesh_threshold: float | None = 1.0  # None: adaptive (quantile), for random-weight models only
    # Pixel-aligned token lifting (models/lrm/lifting.py): 0 = off (VFusion3D); else the number of
    # points per token projected into the input image, and the width of its pixel stem.
    lift_samples: int = 0
    lift_stem_dim: int = 32
    lift_stem_blocks: int = 0  # dilated residual blocks after the stem (context for each pixel's feature)
    # Plane refiner (lifting.PlaneRefiner): 0 = off; else its width. Needs lift_samples > 0.
    refine_dim: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.encoder, Mapping):
            object.__setattr__(self, "encoder", EncoderConfig(**_tuples(self.encoder)))
        if self.transformer_dim % self.transformer_heads:
            raise ModelError(f"transformer_dim {self.transformer_dim} is not divisible by "
                             f"transformer_heads {self.transformer_heads}", fix="fix the model config")
        if self.refine_dim and not self.lift_samples:
            raise ModelError("refine_dim needs lift_samples > 0 (the refiner reuses the lifting's pixel stem)",
                             fix="set lift_samples (e.g. 8) or refine_dim = 0")
        if self.triplane_high_res != 2 * self.triplane_low_res:
            raise ModelError("triplane_high_res must be twice triplane_low_res (one stride-2 deconv)",
                             fix="fix the model config")

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps({"model_type": "orbitmesh-lrm", **self.to_dict()}, indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LRMConfig":
        data = dict(data)
        data.pop("model_type", None)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"unknown LRM config keys {sorted(unknown)}", fix=f"allowed keys are {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_reference(cls, generator_config: Mapping[str, Any],
                       encoder_config: Mapping[str, Any] | None = None, **overrides: Any) -> "LRMConfig":
        """From the reference ``LRMGenerator`` kwargs (+ an optional Dinov2 config), as in fixtures."""
        g = dict(generator_config)
        enc = EncoderConfig()
        if encoder_config:
            e = dict(encoder_config)
            enc = replace(enc, **{k: e[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                     "mlp_ratio", "patch_size", "image_size", "layerscale_value",
                                                     "layer_norm_eps") if k in e})
        if "encoder_feat_dim" in g and g["encoder_feat_dim"] != enc.hidden_size:
            raise ModelError(f"encoder_feat_dim {g['encoder_feat_dim']} differs from the encoder width "
                             f"{enc.hidden_size}", fix="give the matching encoder config")
        keys = ("camera_embed_dim", "transformer_dim", "transformer_layers", "transformer_heads",
                "triplane_low_res", "triplane_high_res", "triplane_dim")
        values = {k: int(g[k]) for k in keys if k in g}
        if "rendering_samples_per_ray" in g:
            values["samples_per_ray"] = int(g["rendering_samples_per_ray"])
        return cls(encoder=enc, **values, **overrides)

    @property
    def source_camera(self) -> list[float]:
        """The 16 numbers of the canonical source camera (camera at +x looking at the origin, +z up)."""
        d = self.source_camera_distance
        f = self.source_focal
        return [0, 0, 1, d, 1, 0, 0, 0, 0, 1, 0, 0, f, f, 0.5, 0.5]


def _tuples(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def vfusion3d() -> LRMConfig:
    """The released VFusion3D model (facebook/vfusion3d)."""
    return LRMConfig()


def tiny() -> LRMConfig:
    """A tiny configuration of the same architecture (tests, the tiny-random plumbing model)."""
    return LRMConfig(
        encoder=EncoderConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, image_size=98),
        camera_embed_dim=32, transformer_dim=64, transformer_layers=2, transformer_heads=4,
        triplane_low_res=4, triplane_high_res=8, triplane_dim=8, samples_per_ray=16,
        input_size=112, mesh_threshold=None,
    )


PRESETS = {"vfusion3d": vfusion3d, "tiny": tiny}


def preset(name: str) -> LRMConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ModelError(f"unknown LRM preset {name!r}", fix=f"use one of {', '.join(PRESETS)}") from None
