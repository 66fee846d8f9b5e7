"""TripoSR configuration in the layout of the released ``config.yaml``, plus presets.

One dataclass per section of the reference ``TSR.Config`` (image_tokenizer, tokenizer, backbone,
post_processor, decoder, renderer), each with every field of the reference module's config and
its default; a field without a default is required, as in the reference. ``*_cls`` keys name the
reference classes; only those are implemented. Our own fields (not in the released file, all
optional): ``image_tokenizer.vit_config`` / ``pos_interpolation``, ``isosurface_threshold``,
``foreground_ratio`` and ``background_grey``.

``TripoSRConfig.from_yaml`` reads a released ``config.yaml`` with PyYAML plus OmegaConf-style
``${a.b}`` interpolation; an unknown key anywhere is a ModelError naming it.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from orbitmesh.errors import ModelError

# The reference classes a released config names; the only ones implemented here.
REFERENCE_CLASSES = {
    "image_tokenizer": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "tokenizer": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "backbone": "tsr.models.transformer.transformer_1d.Transformer1D",
    "post_processor": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "decoder": "tsr.models.network_utils.NeRFMLP",
    "renderer": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
}
FEED_FORWARD_ACTIVATIONS = ("gelu", "gelu-approximate", "geglu", "geglu-approximate")
DECODER_ACTIVATIONS = ("relu", "silu")
POS_INTERPOLATIONS = ("size", "legacy")
# Renderer activations by name (models/triposr/activations.py); any torch.nn.functional name works too.
ACTIVATIONS = ("none", "exp", "sigmoid", "tanh", "softplus", "trunc_exp")
MODEL_TYPE = "orbitmesh-triposr"  # config.json marker of our save_pretrained folders
# Model folder layouts: the released one (hub stabilityai/TripoSR) and our save_pretrained one.
RELEASED_CONFIG, RELEASED_WEIGHTS = "config.yaml", "model.ckpt"
# The reference's orbit cameras (tsr/utils.get_spherical_cameras as run.py uses them); azimuth 0 is the input view.
SOURCE_DISTANCE, SOURCE_FOVY_DEG = 1.9, 40.0
OUR_CONFIG, OUR_WEIGHTS = "config.json", "model.safetensors"


@dataclass(frozen=True)
class ImageTokenizerConfig:
    """``DINOSingleImageTokenizer``: a transformers ``ViTModel`` (with pooler) on ImageNet-normalised RGB."""

    pretrained_model_name_or_path: str = "facebook/dino-vitb16"  # a built-in name or a folder with a ViT config.json
    enable_gradient_checkpointing: bool = False
    # Ours. The ViT config.json values; None: from pretrained_model_name_or_path (never downloaded).
    vit_config: dict | None = None
    # Position-embedding interpolation to the input's patch grid: "size" (bicubic to the exact grid, as
    # transformers >= 4.45 and the parity fixture), "legacy" (scale factor (n + 0.1) / sqrt(N), transformers < 4.45).
    pos_interpolation: str = "size"


@dataclass(frozen=True)
class TokenizerConfig:
    """``Triplane1DTokenizer``: learned 3 x num_channels x plane_size x plane_size embeddings."""

    plane_size: int
    num_channels: int


@dataclass(frozen=True)
class BackboneConfig:
    """``Transformer1D``: GroupNorm, proj_in, ``num_layers`` blocks (self-attn, cross-attn, feed-forward), proj_out."""

    num_attention_heads: int = 16
    attention_head_dim: int = 88
    in_channels: int | None = None
    out_channels: int | None = None  # unused, as in the reference (proj_out maps back to in_channels)
    num_layers: int = 1
    dropout: float = 0.0
    norm_num_groups: int = 32
    cross_attention_dim: int | None = None
    attention_bias: bool = False
    activation_fn: str = "geglu"
    only_cross_attention: bool = False
    double_self_attention: bool = False
    upcast_attention: bool = False
    norm_type: str = "layer_norm"
    norm_elementwise_affine: bool = True
    gradient_checkpointing: bool = False

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclass(frozen=True)
class PostProcessorConfig:
    """``TriplaneUpsampleNetwork``: ConvTranspose2d(in, out, k=2, s=2) per plane."""

    in_channels: int
    out_channels: int


@dataclass(frozen=True)
class DecoderConfig:
    """``NeRFMLP``: in -> n_neurons x n_hidden_layers -> 4 (density + 3 colour features)."""

    in_channels: int
    n_neurons: int
    n_hidden_layers: int
    activation: str = "relu"
    bias: bool = True
    weight_init: str | None = "kaiming_uniform"
    bias_init: str | None = None


@dataclass(frozen=True)
class RendererConfig:
    """``TriplaneNeRFRenderer``: world box [-radius, radius]^3, uniform samples, white background."""

    radius: float
    feature_reduction: str = "concat"
    density_activation: str = "trunc_exp"
    density_bias: float = -1.0
    color_activation: str = "sigmoid"
    num_samples_per_ray: int = 128
    randomized: bool = False  # unused by the reference's renderer, kept for its configs


SECTIONS: dict[str, type] = {
    "image_tokenizer": ImageTokenizerConfig, "tokenizer": TokenizerConfig, "backbone": BackboneConfig,
    "post_processor": PostProcessorConfig, "decoder": DecoderConfig, "renderer": RendererConfig,
}


@dataclass(frozen=True)
class TripoSRConfig:
    """The whole model: the released config's sections and our meshing/preprocessing defaults."""

    cond_image_size: int
    tokenizer: TokenizerConfig
    backbone: BackboneConfig
    post_processor: PostProcessorConfig
    decoder: DecoderConfig
    renderer: RendererConfig
    image_tokenizer: ImageTokenizerConfig = field(default_factory=ImageTokenizerConfig)
    image_tokenizer_cls: str = REFERENCE_CLASSES["image_tokenizer"]
    tokenizer_cls: str = REFERENCE_CLASSES["tokenizer"]
    backbone_cls: str = REFERENCE_CLASSES["backbone"]
    post_processor_cls: str = REFERENCE_CLASSES["post_processor"]
    decoder_cls: str = REFERENCE_CLASSES["decoder"]
    renderer_cls: str = REFERENCE_CLASSES["renderer"]
    # Ours: mesh threshold on the activated density (the reference's extract_mesh default) and the
    # input preprocessing the weights expect (foreground scaled to this share of the frame, on grey).
    isosurface_threshold: float = 25.0
    foreground_ratio: float = 0.85
    background_grey: float = 0.5

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, _section(cls, value, name))
        self.validate()

    # -- what the pipeline reads (the LRM's names) ----------------------------------------------
    @property
    def input_size(self) -> int:
        """The encoder's input size (square, RGB in [0, 1])."""
        return self.cond_image_size

    @property
    def transformer_layers(self) -> int:
        return self.backbone.num_layers

    @property
    def bbox_min(self) -> float:
        return -float(self.renderer.radius)

    @property
    def bbox_max(self) -> float:
        return float(self.renderer.radius)

    @property
    def box_warp(self) -> float:
        """Side of the world box: points map to grid_sample coordinates as 2 p / box_warp = p / radius."""
        return 2.0 * float(self.renderer.radius)

    @property
    def mesh_threshold(self) -> float:
        return float(self.isosurface_threshold)

    @property
    def source_camera_distance(self) -> float:
        """The input view's camera distance: the reference's azimuth-0 orbit camera."""
        return SOURCE_DISTANCE

    @property
    def source_focal(self) -> float:
        """The input view's focal length normalised by the image size: 0.5 / tan(fovy / 2)."""
        return 0.5 / math.tan(math.radians(SOURCE_FOVY_DEG) / 2)

    # -- checks --------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ModelError for a configuration the reference could not build or run."""
        for name, expected in REFERENCE_CLASSES.items():
            got = getattr(self, f"{name}_cls")
            if got != expected:
                raise ModelError(f"unsupported TripoSR {name}_cls {got!r}", fix=f"use {expected}")
        t, b, p, d, r = self.tokenizer, self.backbone, self.post_processor, self.decoder, self.renderer
        if b.in_channels is None:
            raise ModelError("backbone.in_channels is not set",
                             fix="set it (released config: ${tokenizer.num_channels})")
        checks = [
            (self.cond_image_size > 0, "cond_image_size must be > 0"),
            (t.plane_size > 0 and t.num_channels > 0, "tokenizer.plane_size and num_channels must be > 0"),
            (b.in_channels == t.num_channels,
             f"backbone.in_channels {b.in_channels} differs from tokenizer.num_channels {t.num_channels}"),
            (b.norm_num_groups > 0 and b.in_channels % b.norm_num_groups == 0,
             f"backbone.in_channels {b.in_channels} is not divisible by backbone.norm_num_groups {b.norm_num_groups}"),
            (b.num_attention_heads > 0 and b.attention_head_dim > 0, "backbone heads and head dim must be > 0"),
            (b.activation_fn in FEED_FORWARD_ACTIVATIONS,
             f"backbone.activation_fn {b.activation_fn!r} is not one of {', '.join(FEED_FORWARD_ACTIVATIONS)}"),
            (b.norm_type == "layer_norm", f"backbone.norm_type {b.norm_type!r}: only 'layer_norm' is implemented"),
            (p.in_channels == t.num_channels,
             f"post_processor.in_channels {p.in_channels} differs from tokenizer.num_channels {t.num_channels}"),
            (d.in_channels == (3 if r.feature_reduction == "concat" else 1) * p.out_channels,
             f"decoder.in_channels {d.in_channels} does not fit post_processor.out_channels {p.out_channels} "
             f"with renderer.feature_reduction {r.feature_reduction!r}"),
            (d.n_hidden_layers >= 1 and d.n_neurons > 0, "decoder.n_hidden_layers and n_neurons must be >= 1"),
            (d.activation in DECODER_ACTIVATIONS,
             f"decoder.activation {d.activation!r} is not one of {', '.join(DECODER_ACTIVATIONS)}"),
            (d.weight_init in (None, "kaiming_uniform"), f"decoder.weight_init {d.weight_init!r} is not implemented"),
            (d.bias_init in (None, "zero"), f"decoder.bias_init {d.bias_init!r} is not implemented"),
            (r.radius > 0, "renderer.radius must be > 0"),
            (r.feature_reduction in ("concat", "mean"), f"renderer.feature_reduction {r.feature_reduction!r} "
                                                         "is not 'concat' or 'mean'"),
            (r.num_samples_per_ray >= 1, "renderer.num_samples_per_ray must be >= 1"),
            (self.image_tokenizer.pos_interpolation in POS_INTERPOLATIONS,
             f"image_tokenizer.pos_interpolation must be one of {', '.join(POS_INTERPOLATIONS)}"),
            (0 < self.foreground_ratio <= 1, "foreground_ratio must be in (0, 1]"),
            (0 <= self.background_grey <= 1, "background_grey must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ModelError(f"invalid TripoSR config: {message}", fix="fix the model's config")
        for key in ("density_activation", "color_activation"):
            name = getattr(r, key)
            if name is not None and name.lower() not in ACTIVATIONS:  # maybe a torch.nn.functional name: ask torch
                from orbitmesh.models.triposr.activations import get_activation

                get_activation(name, f"renderer.{key}")

    # -- (de)serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The released layout (sections, ``*_cls`` keys) plus our fields; JSON-serialisable."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps({"model_type": MODEL_TYPE, **self.to_dict()}, indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TripoSRConfig":
        """From the released layout (already interpolated) or our config.json; unknown keys are errors."""
        data = dict(data)
        data.pop("model_type", None)
        return _section(cls, data, "")

    @classmethod
    def from_yaml(cls, source: str | os.PathLike) -> "TripoSRConfig":
        """From a released ``config.yaml`` (a path, or its text when it contains a newline)."""
        import yaml

        text = source if isinstance(source, str) and "\n" in source else None
        if text is None:
            path = Path(source)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ModelError(f"cannot read {path}: {exc}", fix="check the model folder's config.yaml") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ModelError(f"the TripoSR config is not valid YAML: {exc}",
                             fix="fix or re-download config.yaml") from exc
        if not isinstance(data, Mapping):
            raise ModelError("the TripoSR config.yaml is not a mapping", fix="fix or re-download config.yaml")
        return cls.from_dict(resolve_interpolations(data))


def _section(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data``: unknown keys, missing required keys and wrong types name the key."""
    if not isinstance(data, Mapping):
        raise ModelError(f"TripoSR config key {where!r} must be a mapping, got {type(data).__name__}",
                         fix="fix the model's config")
    known = {f.name: f for f in fields(cls)}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ModelError(f"unknown TripoSR config key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(prefix + str(k) for k in unknown)}",
                         fix=f"allowed keys{' in ' + where if where else ''}: {', '.join(known)}")
    values = {}
    for name, f in known.items():
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ModelError(f"missing TripoSR config key {prefix}{name}", fix="add it to the model's config")
            continue
        value = data[name]
        if name in SECTIONS and cls is TripoSRConfig:
            value = _section(SECTIONS[name], value, name)
        else:
            value = _typed(value, str(f.type), prefix + name)
        values[name] = value
    return cls(**values)


def _typed(value: Any, annotation: str, key: str) -> Any:
    """Check (and widen int -> float) a YAML/JSON value against its field's annotation."""
    optional = annotation.endswith("| None")
    base = annotation.replace("| None", "").strip()
    if value is None:
        if optional:
            return None
        raise ModelError(f"TripoSR config key {key} must not be null", fix=f"give a {base}")
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool), "str": isinstance(value, str), "dict": isinstance(value, Mapping)}.get(base)
    if not ok:
        raise ModelError(f"TripoSR config key {key} must be of type {base}, got {value!r}",
                         fix="fix the model's config")
    if base == "float":
        return float(value)
    if base == "dict":
        return dict(value)
    return value


def folder_layout(folder: str | os.PathLike) -> str | None:
    """'ours' (config.json with our model_type + model.safetensors), 'released' (config.yaml + model.ckpt or
    model.safetensors) or None: which TripoSR folder ``folder`` is, from the disk only (no torch)."""
    folder = Path(folder)
    if (folder / OUR_CONFIG).is_file() and (folder / OUR_WEIGHTS).is_file():
        try:
            if json.loads((folder / OUR_CONFIG).read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE:
                return "ours"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            pass
    if (folder / RELEASED_CONFIG).is_file() and any((folder / n).is_file() for n in (RELEASED_WEIGHTS, OUR_WEIGHTS)):
        return "released"
    return None


# -- OmegaConf-style interpolation ----------------------------------------------------------------------
_REF = re.compile(r"\$\{([^${}]*)\}")


def resolve_interpolations(data: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve ``${a.b}`` references (absolute dotted paths from the root) in a loaded YAML tree.

    A value that is exactly one reference takes the referenced value with its type; references inside
    longer strings are substituted as text. References may chain; a cycle, a missing target or a
    resolver (``${oc.env:...}``) is a ModelError naming the key.
    """
    root = dict(data)

    def lookup(path: str, key: str, seen: tuple[str, ...]) -> Any:
        if ":" in path:
            raise ModelError(f"TripoSR config key {key}: resolver interpolation ${{{path}}} is not supported",
                             fix="replace it with the value")
        if path in seen:
            raise ModelError(f"TripoSR config key {key}: interpolation cycle {' -> '.join((*seen, path))}",
                             fix="fix the ${...} references in config.yaml")
        node: Any = root
        for part in path.strip().split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ModelError(f"TripoSR config key {key} refers to ${{{path}}}, which does not exist",
                                 fix="fix the ${...} reference in config.yaml")
            node = node[part]
        return resolve(node, path, (*seen, path))

    def resolve(node: Any, key: str, seen: tuple[str, ...]) -> Any:
        if isinstance(node, Mapping):
            return {k: resolve(v, f"{key}.{k}" if key else str(k), seen) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v, f"{key}[{i}]", seen) for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            whole = _REF.fullmatch(node.strip())
            if whole:
                return lookup(whole.group(1), key, seen)
            return _REF.sub(lambda m: str(lookup(m.group(1), key, seen)), node)
        return node

    return resolve(root, "", ())


# The released stabilityai/TripoSR config.yaml (commit c1cf771), comments included: what users download next to
# model.ckpt (the full-size layouts write it; the tests read it through from_yaml).
RELEASED_CONFIG_YAML = """\
cond_image_size: 512

image_tokenizer_cls: tsr.models.tokenizers.image.DINOSingleImageTokenizer
image_tokenizer:
  pretrained_model_name_or_path: "facebook/dino-vitb16"

tokenizer_cls: tsr.models.tokenizers.triplane.Triplane1DTokenizer
tokenizer:
  plane_size: 32
  num_channels: 1024

backbone_cls: tsr.models.transformer.transformer_1d.Transformer1D
backbone:
  in_channels: ${tokenizer.num_channels}
  num_attention_heads: 16
  attention_head_dim: 64
  num_layers: 16
  cross_attention_dim: 768

post_processor_cls: tsr.models.network_utils.TriplaneUpsampleNetwork
post_processor:
  in_channels: 1024
  out_channels: 40

decoder_cls: tsr.models.network_utils.NeRFMLP
decoder:
  in_channels: 120 # 3 * 40
  n_neurons: 64
  n_hidden_layers: 9
  activation: silu

renderer_cls: tsr.models.nerf_renderer.TriplaneNeRFRenderer
renderer:
  radius: 0.87 # slightly larger than 0.5 * sqrt(3)
  feature_reduction: concat
  density_activation: exp
  density_bias: -1.0
  num_samples_per_ray: 128
"""


# -- presets ---------------------------------------------------------------------------------------------
def triposr() -> TripoSRConfig:
    """The released model (hub ``stabilityai/TripoSR``, config.yaml of commit c1cf771)."""
    return TripoSRConfig(
        cond_image_size=512,
        image_tokenizer=ImageTokenizerConfig(pretrained_model_name_or_path="facebook/dino-vitb16"),
        tokenizer=TokenizerConfig(plane_size=32, num_channels=1024),
        backbone=BackboneConfig(in_channels=1024, num_attention_heads=16, attention_head_dim=64, num_layers=16,
                                cross_attention_dim=768),
        post_processor=PostProcessorConfig(in_channels=1024, out_channels=40),
        decoder=DecoderConfig(in_channels=120, n_neurons=64, n_hidden_layers=9, activation="silu"),
        renderer=RendererConfig(radius=0.87, feature_reduction="concat", density_activation="exp", density_bias=-1.0,
                                num_samples_per_ray=128),
    )


TINY_VIT = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 96,
            "image_size": 32, "patch_size": 8, "qkv_bias": True, "layer_norm_eps": 1e-12}


def tiny() -> TripoSRConfig:
    """A tiny configuration of the same architecture (tests; the sizes of the shared parity fixture)."""
    return TripoSRConfig(
        cond_image_size=64,
        image_tokenizer=ImageTokenizerConfig(vit_config=dict(TINY_VIT)),
        tokenizer=TokenizerConfig(plane_size=4, num_channels=32),
        backbone=BackboneConfig(in_channels=32, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                                cross_attention_dim=48),
        post_processor=PostProcessorConfig(in_channels=32, out_channels=8),
        decoder=DecoderConfig(in_channels=24, n_neurons=16, n_hidden_layers=3, activation="silu"),
        renderer=RendererConfig(radius=0.87, density_activation="exp", num_samples_per_ray=24),
    )


PRESETS = {"triposr": triposr, "tiny": tiny}


def preset(name: str) -> TripoSRConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ModelError(f"unknown TripoSR preset {name!r}", fix=f"use one of {', '.join(PRESETS)}") from None


