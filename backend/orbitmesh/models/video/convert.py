"""SGM (generative-models) SV3D checkpoints -> our diffusers-based modules.

An SV3D checkpoint (``sv3d_u.safetensors`` / ``sv3d_p.safetensors``) holds three models:

* ``model.diffusion_model.*``  - the SGM ``VideoUNet``            -> :class:`SV3DUNet`
* ``conditioner.embedders.N.open_clip.model.visual.*`` - OpenCLIP ViT-H/14 image tower
                                                                  -> transformers ``CLIPVisionModelWithProjection``
* ``conditioner.embedders.M.encoder.*`` (VAE encoder, mode only) and ``first_stage_model.decoder.*``
                                                                  -> diffusers ``AutoencoderKL``

Every config is derived from the weights (or from an SGM ``unet_config`` dict), so any size
converts; only what weights cannot tell (head sizes) is a parameter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

import torch

from orbitmesh.errors import ModelError

UNET_PREFIX = "model.diffusion_model."
VAE_DECODER_PREFIX = "first_stage_model."
SCALE_FACTOR = 0.18215  # SGM scale_factor for the SV3D latents
VARIANT_BY_ADM = {1280: "sv3d_p", 256: "sv3d_u", 768: "svd"}
# Layers of SGM's temporal VideoDecoder that SV3D's image decoder does not use.
_TEMPORAL_DECODER_TOKENS = ("time_stack", "time_mix", "mix_factor", "video_time_embed")

StateDict = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- UNet config


def sgm_unet_config_from_state_dict(sd: Mapping[str, torch.Tensor], num_head_channels: int = 64) -> dict[str, Any]:
    """Recover the SGM ``VideoUNet`` params from its (prefix-stripped) weights.

    Head size is not visible in the weights: ``num_head_channels`` (SV3D: 64) fills it in.
    """
    if "input_blocks.0.0.weight" not in sd or "out.2.weight" not in sd:
        raise ModelError("the UNet weights have no input_blocks.0.0 / out.2 convolution",
                         fix="pass an SGM VideoUNet state dict (keys model.diffusion_model.*)")
    model_channels, in_channels = sd["input_blocks.0.0.weight"].shape[:2]
    mults: list[int] = []
    attention_levels: list[int] = []
    depths: list[int] = []
    num_res_blocks = 0
    k, level, res_in_level = 1, 0, 0
    while f"input_blocks.{k}.0.op.weight" in sd or f"input_blocks.{k}.0.in_layers.0.weight" in sd:
        if f"input_blocks.{k}.0.op.weight" in sd:  # downsample: next level
            num_res_blocks = num_res_blocks or res_in_level
            level, res_in_level = level + 1, 0
        else:
            if res_in_level == 0:
                mults.append(int(sd[f"input_blocks.{k}.0.out_layers.3.weight"].shape[0]) // model_channels)
                if f"input_blocks.{k}.1.proj_in.weight" in sd:
                    attention_levels.append(2 ** level)
                depths.append(_transformer_depth(sd, f"input_blocks.{k}.1.") or 1)
            res_in_level += 1
        k += 1
    num_res_blocks = num_res_blocks or res_in_level
    context_dim = int(sd["middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1])
    kernel = list(sd["middle_block.0.time_stack.in_layers.2.weight"].shape[2:])
    cfg: dict[str, Any] = {
        "in_channels": int(in_channels), "out_channels": int(sd["out.2.weight"].shape[0]),
        "model_channels": int(model_channels), "attention_resolutions": attention_levels,
        "num_res_blocks": num_res_blocks, "channel_mult": mults, "num_head_channels": num_head_channels,
        "use_linear_in_transformer": sd["middle_block.1.proj_in.weight"].ndim == 2,
        "transformer_depth": depths[0] if len(set(depths)) == 1 else depths,
        "transformer_depth_middle": _transformer_depth(sd, "middle_block.1."),
        "context_dim": context_dim,
        "extra_ff_mix_layer": "middle_block.1.time_stack.0.ff_in.net.0.proj.weight" in sd,
        "use_spatial_context": int(sd["middle_block.1.time_stack.0.attn2.to_k.weight"].shape[1]) == context_dim,
        "merge_strategy": "learned_with_images", "video_kernel_size": kernel,
    }
    if "label_emb.0.0.weight" in sd:
        cfg.update(num_classes="sequential", adm_in_channels=int(sd["label_emb.0.0.weight"].shape[1]))
    return cfg


def _transformer_depth(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    ids = {int(m.group(1)) for key in sd if key.startswith(prefix)
           for m in [re.match(re.escape(prefix) + r"transformer_blocks\.(\d+)\.", key)] if m}
    return max(ids) + 1 if ids else 0


def diffusers_unet_config(sgm: Mapping[str, Any], num_frames: int = 21) -> dict[str, Any]:
    """SGM ``VideoUNet`` params -> ``SV3DUNet`` (``UNetSpatioTemporalConditionModel``) config.

    Block types follow ``attention_resolutions`` (level ``l`` has attention iff ``2**l`` is in
    it) and ``channel_mult``; the mid block always has attention, as in SGM.
    """
    unsupported = {
        "num_classes": (sgm.get("num_classes"), "sequential"),
        "extra_ff_mix_layer": (bool(sgm.get("extra_ff_mix_layer", False)), True),
        "use_spatial_context": (bool(sgm.get("use_spatial_context", False)), True),
        "merge_strategy": (sgm.get("merge_strategy", "fixed"), "learned_with_images"),
        "video_kernel_size": (list(_as_list(sgm.get("video_kernel_size", 3), 3)), [3, 1, 1]),
        "use_scale_shift_norm": (bool(sgm.get("use_scale_shift_norm", False)), False),
        "resblock_updown": (bool(sgm.get("resblock_updown", False)), False),
        "disable_temporal_crossattention": (bool(sgm.get("disable_temporal_crossattention", False)), False),
        "time_downup": (bool(sgm.get("time_downup", False)), False),
    }
    for name, (got, want) in unsupported.items():
        if got != want:
            raise ModelError(f"SGM VideoUNet setting {name}={got!r} is not supported (SV3D uses {want!r})",
                             fix="convert an SV3D (sv3d_u / sv3d_p) checkpoint")
    mc, mults = int(sgm["model_channels"]), list(sgm["channel_mult"])
    chans = [mc * m for m in mults]
    attn = [2 ** level in list(sgm["attention_resolutions"]) for level in range(len(mults))]
    nhc, nh = int(sgm.get("num_head_channels", -1)), int(sgm.get("num_heads", -1))
    heads = [c // nhc if nhc != -1 else nh for c in chans]
    if any(h < 1 or c % h for h, c in zip(heads, chans)):
        raise ModelError(f"block channels {chans} do not split into heads (num_head_channels={nhc}, num_heads={nh})",
                         fix="pass the checkpoint's num_head_channels (SV3D: 64)")
    depth = list(_as_list(sgm.get("transformer_depth", 1), len(mults)))
    middle = sgm.get("transformer_depth_middle") or depth[-1]
    if depth[-1] != middle:
        if attn[-1]:
            raise ModelError("a different transformer depth in the mid block than in the deepest level is not "
                             "supported by diffusers' UNetSpatioTemporalConditionModel")
        depth[-1] = middle  # the deepest level has no attention: the last entry only sizes the mid block
    return {
        "in_channels": int(sgm["in_channels"]), "out_channels": int(sgm["out_channels"]),
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attn],
        "up_block_types": ["CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in attn[::-1]],
        "block_out_channels": chans, "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": int(sgm["adm_in_channels"]),
        "layers_per_block": int(sgm["num_res_blocks"]), "cross_attention_dim": int(sgm["context_dim"]),
        "transformer_layers_per_block": depth, "num_attention_heads": heads, "num_frames": int(num_frames),
    }


def _as_list(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


# --------------------------------------------------------------------------- UNet weights

_RESNET_RENAMES = (("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."),
                   ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut."))


def _unet_prefix_map(sgm: Mapping[str, Any]) -> dict[str, str]:
    """SGM module prefix -> diffusers module prefix, from the block layout."""
    levels, res = len(sgm["channel_mult"]), int(sgm["num_res_blocks"])
    attn = [2 ** level in list(sgm["attention_resolutions"]) for level in range(levels)]
    m = {"time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
         "label_emb.0.0.": "add_embedding.linear_1.", "label_emb.0.2.": "add_embedding.linear_2.",
         "input_blocks.0.0.": "conv_in.", "out.0.": "conv_norm_out.", "out.2.": "conv_out.",
         "middle_block.0.": "mid_block.resnets.0.", "middle_block.1.": "mid_block.attentions.0.",
         "middle_block.2.": "mid_block.resnets.1."}
    k = 1
    for level in range(levels):
        for j in range(res):
            m[f"input_blocks.{k}.0."] = f"down_blocks.{level}.resnets.{j}."
            if attn[level]:
                m[f"input_blocks.{k}.1."] = f"down_blocks.{level}.attentions.{j}."
            k += 1
        if level != levels - 1:
            m[f"input_blocks.{k}.0.op."] = f"down_blocks.{level}.downsamplers.0.conv."
            k += 1
    k = 0
    for i in range(levels):
        level = levels - 1 - i
        for j in range(res + 1):
            m[f"output_blocks.{k}.0."] = f"up_blocks.{i}.resnets.{j}."
            if attn[level]:
                m[f"output_blocks.{k}.1."] = f"up_blocks.{i}.attentions.{j}."
            if level and j == res:
                m[f"output_blocks.{k}.{2 if attn[level] else 1}.conv."] = f"up_blocks.{i}.upsamplers.0.conv."
            k += 1
    return m


def _rename_inside(diffusers_prefix: str, rest: str) -> str:
    if ".resnets." in diffusers_prefix:  # SGM VideoResBlock -> SpatioTemporalResBlock
        if rest.startswith("time_mixer."):
            return rest
        target = "spatial_res_block."
        if rest.startswith("time_stack."):
            rest, target = rest[len("time_stack."):], "temporal_res_block."
        for old, new in _RESNET_RENAMES:
            if rest.startswith(old):
                return target + new + rest[len(old):]
        return target + rest
    if ".attentions." in diffusers_prefix:  # SpatialVideoTransformer -> TransformerSpatioTemporalModel
        for old, new in (("time_stack.", "temporal_transformer_blocks."),
                         ("time_pos_embed.0.", "time_pos_embed.linear_1."),
                         ("time_pos_embed.2.", "time_pos_embed.linear_2.")):
            if rest.startswith(old):
                return new + rest[len(old):]
    return rest


def unet_key_map(keys: Iterable[str], sgm: Mapping[str, Any]) -> dict[str, str]:
    """``SV3DUNet`` name -> SGM VideoUNet name (prefix-stripped) for every key in ``keys``; unknown keys are an
    error."""
    prefixes = sorted(_unet_prefix_map(sgm).items(), key=lambda kv: -len(kv[0]))
    out: dict[str, str] = {}
    unknown = []
    for key in keys:
        for old, new in prefixes:
            if key.startswith(old):
                out[new + _rename_inside(new, key[len(old):])] = key
                break
        else:
            unknown.append(key)
    if unknown:
        raise ModelError(f"{len(unknown)} UNet weights do not fit the derived layout, e.g. {unknown[:3]}",
                         fix="check that the checkpoint is an SV3D VideoUNet and its config matches")
    return out


def convert_unet_state_dict(sd: Mapping[str, torch.Tensor], sgm: Mapping[str, Any]) -> StateDict:
    """(prefix-stripped) SGM VideoUNet weights -> ``SV3DUNet`` state dict. Unknown keys are an error."""
    return {new: sd[old] for new, old in unet_key_map(sd, sgm).items()}


def _fits_1x1(value_shape: tuple[int, ...], expected_shape: tuple[int, ...]) -> bool:
    """SGM may store 1x1 convolutions where diffusers has linears."""
    return len(value_shape) == 4 and len(expected_shape) == 2 and tuple(value_shape[2:]) == (1, 1)


def fit_tensor(value: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """``value`` in the shape of ``expected`` (a 1x1 convolution as a linear weight)."""
    return value[:, :, 0, 0] if _fits_1x1(tuple(value.shape), tuple(expected.shape)) else value


def check_shapes(expected: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]], what: str) -> None:
    """A readable ModelError naming missing/unexpected keys and shape mismatches (1x1 convs fit linears)."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    bad = [f"{k} {tuple(shapes[k])} != {tuple(expected[k].shape)}" for k in expected
           if k in shapes and tuple(shapes[k]) != tuple(expected[k].shape)
           and not _fits_1x1(tuple(shapes[k]), tuple(expected[k].shape))]
    if missing or unexpected or bad:
        parts = [f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                 f"{len(bad)} with wrong shapes (e.g. {bad[:2]})" if bad else ""]
        raise ModelError(f"the {what} weights do not match the architecture: " + "; ".join(p for p in parts if p),
                         fix="use the checkpoint that belongs to this model (or re-run convert-sv3d)")


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Strict load with a readable error: missing/unexpected keys and shape mismatches are named."""
    expected = model.state_dict()
    check_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, what)
    model.load_state_dict({k: fit_tensor(v, expected[k]) for k, v in state.items()}, strict=True)
    return model


def build_unet(sgm: Mapping[str, Any], num_frames: int = 21):
    """An ``SV3DUNet`` (random weights) with the layout of the SGM config."""
    from orbitmesh.models.video.unet import SV3DUNet

    return SV3DUNet(**diffusers_unet_config(sgm, num_frames=num_frames))


def unet_from_sgm(sd: Mapping[str, torch.Tensor], sgm: Mapping[str, Any] | None = None,
                  num_head_channels: int = 64):
    """SGM VideoUNet weights (prefix-stripped) -> loaded ``SV3DUNet``; the config is derived if not given."""
    sgm = dict(sgm) if sgm is not None else sgm_unet_config_from_state_dict(sd, num_head_channels)
    unet = build_unet(sgm)
    return load_into(unet, convert_unet_state_dict(sd, sgm), "UNet").eval()


# --------------------------------------------------------------------------- VAE


def _find_prefix(keys, pattern: str) -> str | None:
    for key in keys:
        m = re.match(pattern, key)
        if m:
            return m.group(0)
    return None


def vae_state_dict_from_checkpoint(ckpt: Mapping[str, torch.Tensor]) -> StateDict:
    """LDM-named VAE weights (``encoder.*``, ``quant_conv.*``, ``decoder.*``): encoder from the
    conditioner's VAE, decoder from ``first_stage_model`` (its 2-D layers: SV3D decodes per image)."""
    enc = _find_prefix(ckpt, r"conditioner\.embedders\.\d+\.encoder\.(?=encoder\.)")
    if enc is None:
        raise ModelError("the checkpoint has no VAE encoder under conditioner.embedders.N.encoder.encoder.*",
                         fix="use a full SV3D checkpoint (sv3d_u.safetensors / sv3d_p.safetensors)")
    out: StateDict = {}
    for key in ckpt:  # keys first, values only for the VAE's own (a lazy checkpoint loads what is asked for)
        if key.startswith(enc + "encoder.") or key.startswith(enc + "quant_conv."):
            out[key[len(enc):]] = ckpt[key]
        elif key.startswith(VAE_DECODER_PREFIX + "decoder.") or key.startswith(VAE_DECODER_PREFIX + "post_quant_conv."):
            if not any(token in key for token in _TEMPORAL_DECODER_TOKENS):
                out[key[len(VAE_DECODER_PREFIX):]] = ckpt[key]
    if "decoder.conv_in.weight" not in out:
        if f"{enc}decoder.conv_in.weight" in ckpt:  # no first_stage_model: use the conditioner AE's decoder
            out.update({k[len(enc):]: ckpt[k] for k in ckpt if k.startswith(enc + "decoder.")
                        or k.startswith(enc + "post_quant_conv.")})
        else:
            raise ModelError("the checkpoint has no VAE decoder (first_stage_model.decoder.*)",
                             fix="use a full SV3D checkpoint (sv3d_u.safetensors / sv3d_p.safetensors)")
    return out


def vae_config_from_state_dict(vae: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """diffusers ``AutoencoderKL`` config from LDM-named VAE weights."""
    ch = int(vae["encoder.conv_in.weight"].shape[0])
    levels = sorted({int(m.group(1)) for k in vae for m in [re.match(r"encoder\.down\.(\d+)\.", k)] if m})
    chans = [int(vae[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels]
    blocks = {int(m.group(1)) for k in vae for m in [re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)] if m}
    return {
        "in_channels": int(vae["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(vae["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * len(chans), "up_block_types": ["UpDecoderBlock2D"] * len(chans),
        "block_out_channels": chans, "layers_per_block": len(blocks),
        "latent_channels": int(vae["decoder.conv_in.weight"].shape[1]),
        "norm_num_groups": 32 if ch % 32 == 0 else ch, "sample_size": 576, "scaling_factor": SCALE_FACTOR,
        "use_quant_conv": "quant_conv.weight" in vae, "use_post_quant_conv": "post_quant_conv.weight" in vae,
    }


def vae_from_checkpoint(ckpt: Mapping[str, torch.Tensor]):
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    ldm = vae_state_dict_from_checkpoint(ckpt)
    config = vae_config_from_state_dict(ldm)
    state = convert_ldm_vae_checkpoint({VAE_DECODER_PREFIX + k: v for k, v in ldm.items()}, config)
    return load_into(AutoencoderKL(**config), state, "VAE").eval()


# --------------------------------------------------------------------------- CLIP image encoder


def clip_prefix(ckpt: Mapping[str, torch.Tensor]) -> str | None:
    return _find_prefix(ckpt, r"conditioner\.embedders\.\d+\.(?:open_clip\.)?model\.visual\.")


def clip_config_from_state_dict(visual: Mapping[str, torch.Tensor], num_heads: int | None = None) -> dict[str, Any]:
    """transformers ``CLIPVisionConfig`` kwargs from OpenCLIP ``visual.*`` weights (prefix stripped).

    Heads are not visible in the weights: ViT-H/14 (width 1280) has 16; otherwise width // 64.
    """
    width, _, patch, _ = _shape(visual, "conv1.weight")
    layers = {int(m.group(1)) for k in visual for m in [re.match(r"transformer\.resblocks\.(\d+)\.", k)] if m}
    grid = int(round((_shape(visual, "positional_embedding")[0] - 1) ** 0.5))
    return {
        "hidden_size": int(width),
        "intermediate_size": int(_shape(visual, "transformer.resblocks.0.mlp.c_fc.weight")[0]),
        "num_hidden_layers": len(layers),
        "num_attention_heads": num_heads or (16 if width == 1280 else max(1, width // 64)),
        "image_size": grid * int(patch), "patch_size": int(patch), "projection_dim": int(_shape(visual, "proj")[1]),
        "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    }


_CLIP_FIXED = {"vision_model.embeddings.class_embedding": "class_embedding",
               "vision_model.embeddings.position_embedding.weight": "positional_embedding",
               "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
               "vision_model.pre_layrnorm.weight": "ln_pre.weight", "vision_model.pre_layrnorm.bias": "ln_pre.bias",
               "vision_model.post_layernorm.weight": "ln_post.weight",
               "vision_model.post_layernorm.bias": "ln_post.bias"}
_CLIP_RENAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                 "attn.out_proj": "self_attn.out_proj"}
# How a CLIP weight is made from its OpenCLIP tensor: as is (None), transposed ("T"), or part i of a fused q,k,v.
ClipTransform = Union[None, str, int]


def clip_key_plan(keys: Iterable[str]) -> dict[str, tuple[str, ClipTransform]]:
    """``CLIPVisionModelWithProjection`` name -> (OpenCLIP ``visual.*`` name, transform) for the keys given."""
    keys = list(keys)
    plan: dict[str, tuple[str, ClipTransform]] = {new: (old, None) for new, old in _CLIP_FIXED.items() if old in keys}
    if "proj" in keys:
        plan["visual_projection.weight"] = ("proj", "T")
    for key in keys:
        m = re.match(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias|in_proj_weight|in_proj_bias)$", key)
        if not m:
            continue
        layer, module, kind = m.groups()
        base = f"vision_model.encoder.layers.{layer}."
        if kind.startswith("in_proj"):  # fused q,k,v -> three projections
            suffix = kind.split("_")[-1]
            for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
                plan[f"{base}self_attn.{name}.{suffix}"] = (key, i)
        elif module in _CLIP_RENAMES:
            plan[f"{base}{_CLIP_RENAMES[module]}.{kind}"] = (key, None)
    return plan


def clip_transform(value: torch.Tensor, how: ClipTransform) -> torch.Tensor:
    if how is None:
        return value
    if how == "T":
        return value.T.contiguous()
    return value.chunk(3, dim=0)[int(how)].contiguous()


def _clip_shape(shape: tuple[int, ...], how: ClipTransform) -> tuple[int, ...]:
    if how is None:
        return tuple(shape)
    if how == "T":
        return tuple(reversed(shape))
    return (shape[0] // 3, *shape[1:])


def convert_clip_state_dict(visual: Mapping[str, torch.Tensor]) -> StateDict:
    """OpenCLIP ``visual.*`` (prefix stripped) -> ``CLIPVisionModelWithProjection`` state dict."""
    return {new: clip_transform(visual[old], how) for new, (old, how) in clip_key_plan(visual).items()}


def clip_from_checkpoint(ckpt: Mapping[str, torch.Tensor], num_heads: int | None = None):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    prefix = clip_prefix(ckpt)
    if prefix is None:
        raise ModelError("the checkpoint has no OpenCLIP image encoder "
                         "(conditioner.embedders.N.open_clip.model.visual.*)",
                         fix="use a full SV3D checkpoint (sv3d_u.safetensors / sv3d_p.safetensors)")
    visual = {k[len(prefix):]: v for k, v in ckpt.items() if k.startswith(prefix)}
    config = CLIPVisionConfig(**clip_config_from_state_dict(visual, num_heads))
    model = CLIPVisionModelWithProjection(config)
    return load_into(model, convert_clip_state_dict(visual), "CLIP image encoder").eval()


# --------------------------------------------------------------------------- whole checkpoints


CHECKPOINT_FIX = "download the file again (sv3d_u.safetensors / sv3d_p.safetensors)"


def read_checkpoint(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    """Tensors and metadata of a safetensors file; a clear ModelError if it is not one."""
    from orbitmesh.models.streaming import read_safetensors

    return read_safetensors(path, fix=CHECKPOINT_FIX)


def open_checkpoint(path: str | Path):
    """A :class:`~orbitmesh.models.streaming.LazyCheckpoint` (tensors loaded when asked for); a clear ModelError
    if the file is missing, truncated or not safetensors."""
    from orbitmesh.models.streaming import LazyCheckpoint

    return LazyCheckpoint(path, fix=CHECKPOINT_FIX)


class PrefixView(Mapping):
    """The keys of ``ckpt`` under ``prefix``, prefix removed, loaded lazily from ``ckpt``."""

    def __init__(self, ckpt: Mapping[str, torch.Tensor], prefix: str) -> None:
        self.ckpt, self.prefix = ckpt, prefix
        self._keys = [k[len(prefix):] for k in ckpt if k.startswith(prefix)]
        self._set = set(self._keys)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._set:
            raise KeyError(key)
        return self.ckpt[self.prefix + key]

    def __contains__(self, key: object) -> bool:
        return key in self._set

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        return _shape(self.ckpt, self.prefix + key)


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    """A tensor's shape without loading it where the mapping can tell (a lazy checkpoint reads its header)."""
    shape = getattr(sd, "shape", None)
    return tuple(shape(key)) if callable(shape) else tuple(sd[key].shape)


def identify(ckpt: Mapping[str, torch.Tensor]) -> str:
    """'sv3d_p' | 'sv3d_u' | 'svd' | 'lrm' | 'unknown' from the key layout."""
    keys = list(ckpt)
    if any(k.startswith(UNET_PREFIX) for k in keys):
        emb = ckpt.get(UNET_PREFIX + "label_emb.0.0.weight")
        return VARIANT_BY_ADM.get(int(emb.shape[1]), "unknown") if emb is not None else "unknown"
    lrm_markers = ("encoder.model.", "camera_embedder.", "synthesizer.", "transformer.layers.", "model.encoder.model.",
                   "model.camera_embedder.", "model.synthesizer.")
    if any(k.startswith(lrm_markers) for k in keys):
        return "lrm"
    return "unknown"


_DESCRIBE = {"sv3d_p": "an SV3D sv3d_p checkpoint (per-frame camera conditioning, 1280 numbers)",
             "sv3d_u": "an SV3D sv3d_u checkpoint (no camera conditioning, 256 numbers)",
             "svd": "a Stable Video Diffusion checkpoint (fps/motion/cond_aug conditioning, 768 numbers, no camera)",
             "lrm": "an LRM (VFusion3D / OpenLRM) checkpoint",
             "unknown": "not an SGM video-model checkpoint (no model.diffusion_model.* keys)"}


def check_kind(ckpt: Mapping[str, torch.Tensor], name: str, expected: str | None = None) -> str:
    """Identify the checkpoint; raise a ModelError saying what it is and what was expected."""
    kind = identify(ckpt)
    wanted = (expected,) if expected else ("sv3d_p", "sv3d_u")
    if kind not in wanted:
        want = " or ".join(_DESCRIBE[w].split(" (")[0] for w in wanted)
        raise ModelError(f"{name} is {_DESCRIBE[kind]}; expected {want}",
                         fix="use sv3d_p.safetensors / sv3d_u.safetensors from stabilityai/sv3d")
    return kind


def convert_checkpoint(path: str | Path, out_dir: str | Path, expected: str | None = None,
                       num_head_channels: int = 64) -> dict[str, Any]:
    """``convert-sv3d``: SGM SV3D checkpoint -> diffusers-style folder (``unet/``, ``vae/``,
    ``image_encoder/``, ``sv3d.json``). Written into a temp folder and renamed, so it is atomic.

    Streams: the UNet and the CLIP tower are checked against models built on the meta device and written
    tensor by tensor from the (lazily read) checkpoint, so memory holds one tensor of them at a time (a
    full-size sv3d_p: ~9 GB of fp32 weights); only the small VAE is built in memory.
    """
    import shutil
    import tempfile

    with open_checkpoint(path) as ckpt:
        variant = check_kind(ckpt, Path(path).name, expected)
        sgm = json.loads(ckpt.metadata["unet_config"]) if "unet_config" in ckpt.metadata else None
        unet_sd = PrefixView(ckpt, UNET_PREFIX)
        sgm = dict(sgm) if sgm is not None else sgm_unet_config_from_state_dict(unet_sd, num_head_channels)
        unet_plan = _unet_plan(unet_sd, sgm)  # checked before anything is written
        vae = vae_from_checkpoint(ckpt)
        clip_plan = _clip_plan(ckpt)
        out_dir = Path(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            unet_plan(tmp / "unet")
            vae.save_pretrained(tmp / "vae")
            del vae
            clip_plan(tmp / "image_encoder")
            info = {"variant": variant, "source": Path(path).name, "scale_factor": SCALE_FACTOR,
                    "sgm_unet_config": sgm}
            (tmp / "sv3d.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            if out_dir.exists():
                shutil.rmtree(out_dir)
            tmp.rename(out_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return info


def _meta(build):
    """``build()`` on the meta device: names, shapes and dtypes without memory."""
    with torch.device("meta"):
        return build()


def _unet_plan(sd: Mapping[str, torch.Tensor], sgm: Mapping[str, Any]):
    """Check the SGM UNet weights against an ``SV3DUNet`` built on the meta device; returns ``write(folder)``,
    which writes its ``config.json`` and ``diffusion_pytorch_model.safetensors`` one tensor at a time."""
    unet = _meta(lambda: build_unet(sgm))
    expected = unet.state_dict()
    names = unet_key_map(sd, sgm)
    check_shapes(expected, {new: _shape(sd, old) for new, old in names.items()}, "UNet")
    return _folder_writer(expected, lambda k, v: fit_tensor(sd[names[k]], v), unet.save_config,
                          "diffusion_pytorch_model.safetensors")


def _folder_writer(expected: Mapping[str, torch.Tensor], make: Callable[[str, torch.Tensor], torch.Tensor],
                   save_config: Callable[[Path], Any], weights_name: str) -> Callable[[Path], None]:
    """``write(folder)``: the config (``save_config(folder)``) and ``weights_name``, written one tensor at a time:
    each of ``expected`` (name -> meta tensor) made by ``make(name, meta)`` when its turn comes, in its dtype."""
    from orbitmesh.models.streaming import Entry, write_safetensors

    entries = [Entry(k, v.dtype, tuple(v.shape), lambda k=k, v=v: make(k, v).to(v.dtype)) for k, v in expected.items()]

    def write(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_config(folder)
        write_safetensors(folder / weights_name, entries, {"format": "pt"})

    return write


def _clip_plan(ckpt: Mapping[str, torch.Tensor], num_heads: int | None = None):
    """Check the OpenCLIP image tower against a ``CLIPVisionModelWithProjection`` built on the meta device; returns
    ``write(folder)``, which writes its ``config.json`` and ``model.safetensors`` one tensor at a time."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    prefix = clip_prefix(ckpt)
    if prefix is None:
        raise ModelError("the checkpoint has no OpenCLIP image encoder "
                         "(conditioner.embedders.N.open_clip.model.visual.*)",
                         fix="use a full SV3D checkpoint (sv3d_u.safetensors / sv3d_p.safetensors)")
    visual = PrefixView(ckpt, prefix)
    config = CLIPVisionConfig(**clip_config_from_state_dict(visual, num_heads))
    config.architectures = ["CLIPVisionModelWithProjection"]
    model = _meta(lambda: CLIPVisionModelWithProjection(config))
    expected = model.state_dict()
    plan = clip_key_plan(visual)
    check_shapes(expected, {new: _clip_shape(_shape(visual, old), how) for new, (old, how) in plan.items()},
                 "CLIP image encoder")
    return _folder_writer(expected, lambda k, v: clip_transform(visual[plan[k][0]], plan[k][1]),
                          config.save_pretrained, "model.safetensors")
