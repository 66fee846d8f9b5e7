"""Tiny random SV3D checkpoints in the SGM layout, for tests, smoke runs and benchmarks.

``tiny_sgm_checkpoint()`` builds random diffusers/transformers modules of a small config and
writes their weights back under the SGM names (``model.diffusion_model.*``,
``conditioner.embedders.0.open_clip.model.visual.*``, ``conditioner.embedders.1.encoder.*``,
``first_stage_model.decoder.*``) - the inverse of :mod:`orbitmesh.models.video.convert`.
Nothing here is a trained model.
"""

from __future__ import annotations

from typing import Any

import torch

from orbitmesh.models.video.convert import _RESNET_RENAMES, _unet_prefix_map, build_unet

# The released SV3D VideoUNet (scripts/sampling/configs/sv3d_p.yaml).
SV3D_P_SGM_CONFIG: dict[str, Any] = {
    "adm_in_channels": 1280, "num_classes": "sequential", "in_channels": 8, "out_channels": 4,
    "model_channels": 320, "attention_resolutions": [4, 2, 1], "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4],
    "num_head_channels": 64, "use_linear_in_transformer": True, "transformer_depth": 1, "context_dim": 1024,
    "extra_ff_mix_layer": True, "use_spatial_context": True, "merge_strategy": "learned_with_images",
    "video_kernel_size": [3, 1, 1],
}
SV3D_U_SGM_CONFIG: dict[str, Any] = {**SV3D_P_SGM_CONFIG, "adm_in_channels": 256}
TINY_SGM_CONFIG: dict[str, Any] = {
    **SV3D_P_SGM_CONFIG, "model_channels": 32, "attention_resolutions": [2, 1], "num_res_blocks": 1,
    "channel_mult": [1, 2, 2], "num_head_channels": 16, "context_dim": 32,
}


def _inverse_inside(diffusers_prefix: str, rest: str) -> str:
    if ".resnets." in diffusers_prefix:
        if rest.startswith("time_mixer."):
            return rest
        head, _, rest = rest.partition(".")
        prefix = "time_stack." if head == "temporal_res_block" else ""
        for old, new in _RESNET_RENAMES:
            if rest.startswith(new):
                return prefix + old + rest[len(new):]
        return prefix + rest
    if ".attentions." in diffusers_prefix:
        for old, new in (("time_stack.", "temporal_transformer_blocks."),
                         ("time_pos_embed.0.", "time_pos_embed.linear_1."),
                         ("time_pos_embed.2.", "time_pos_embed.linear_2.")):
            if rest.startswith(new):
                return old + rest[len(new):]
    return rest


def sgm_unet_state_dict(unet: torch.nn.Module, sgm: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``SV3DUNet`` weights -> SGM VideoUNet names (no prefix)."""
    prefixes = sorted(((new, old) for old, new in _unet_prefix_map(sgm).items()), key=lambda kv: -len(kv[0]))
    out = {}
    for key, value in unet.state_dict().items():
        for new, old in prefixes:
            if key.startswith(new):
                out[old + _inverse_inside(new, key[len(new):])] = value.clone()
                break
        else:
            raise KeyError(f"no SGM name for {key}")
    return out


def ldm_vae_state_dict(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    """diffusers ``AutoencoderKL`` weights -> LDM names (``encoder.*``, ``decoder.*``, ``quant_conv.*``)."""
    levels = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        k = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        for part in ("encoder", "decoder"):
            k = k.replace(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.")
            k = k.replace(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.")
            if f"{part}.mid_block.attentions.0." in k:
                k = k.replace(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")
                for old, new in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                                 ("to_out.0", "proj_out")):
                    k = k.replace(f"attn_1.{old}.", f"attn_1.{new}.")
                if value.ndim == 2:  # LDM attention projections are 1x1 convolutions
                    value = value[:, :, None, None]
        if k.startswith("encoder.down_blocks."):
            i, rest = k[len("encoder.down_blocks."):].split(".", 1)
            rest = rest.replace("resnets.", "block.").replace("downsamplers.0.", "downsample.")
            k = f"encoder.down.{i}.{rest}"
        elif k.startswith("decoder.up_blocks."):
            i, rest = k[len("decoder.up_blocks."):].split(".", 1)
            rest = rest.replace("resnets.", "block.").replace("upsamplers.0.", "upsample.")
            k = f"decoder.up.{levels - 1 - int(i)}.{rest}"
        out[k] = value.clone()
    return out


def open_clip_visual_state_dict(clip: torch.nn.Module) -> dict[str, torch.Tensor]:
    """transformers ``CLIPVisionModelWithProjection`` weights -> OpenCLIP ``visual.*`` names (no prefix)."""
    sd = clip.state_dict()
    out = {"class_embedding": sd["vision_model.embeddings.class_embedding"],
           "positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
           "conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
           "ln_pre.weight": sd["vision_model.pre_layrnorm.weight"], "ln_pre.bias": sd["vision_model.pre_layrnorm.bias"],
           "ln_post.weight": sd["vision_model.post_layernorm.weight"],
           "ln_post.bias": sd["vision_model.post_layernorm.bias"],
           "proj": sd["visual_projection.weight"].T.contiguous()}
    for n in range(clip.config.num_hidden_layers):
        src, dst = f"vision_model.encoder.layers.{n}.", f"transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([sd[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for old, new in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
                             ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj")):
                out[f"{dst}{new}.{kind}"] = sd[f"{src}{old}.{kind}"]
    return {k: v.clone() for k, v in out.items()}


def tiny_modules(sgm: dict[str, Any] | None = None, seed: int = 0, clip_width: int = 64):
    """(unet, vae, clip) with random weights: VAE downsamples by 8 like SV3D's; CLIP projects to context_dim."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    sgm = dict(sgm or TINY_SGM_CONFIG)
    torch.manual_seed(seed)
    unet = build_unet(sgm)
    with torch.no_grad():  # diffusers zero-inits nothing here, but give every weight some signal
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    vae = AutoencoderKL(block_out_channels=[32, 32, 32, 32], layers_per_block=1, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        norm_num_groups=32, use_post_quant_conv=False)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=clip_width, intermediate_size=2 * clip_width, num_hidden_layers=1,
        num_attention_heads=max(1, clip_width // 64), image_size=28, patch_size=14,
        projection_dim=int(sgm["context_dim"]), hidden_act="gelu", layer_norm_eps=1e-5))
    return unet.eval(), vae.eval(), clip.eval()


def tiny_sgm_checkpoint(sgm: dict[str, Any] | None = None, seed: int = 0, temporal_decoder: bool = True
                        ) -> tuple[dict[str, torch.Tensor], tuple]:
    """(SGM-layout state dict, the (unet, vae, clip) it came from). ``temporal_decoder`` adds the
    layers of SGM's VideoDecoder that SV3D's image decoder ignores."""
    sgm = dict(sgm or TINY_SGM_CONFIG)
    unet, vae, clip = tiny_modules(sgm, seed)
    ckpt = {f"model.diffusion_model.{k}": v for k, v in sgm_unet_state_dict(unet, sgm).items()}
    ckpt.update({f"conditioner.embedders.0.open_clip.model.visual.{k}": v
                 for k, v in open_clip_visual_state_dict(clip).items()})
    ckpt["conditioner.embedders.0.open_clip.model.logit_scale"] = torch.tensor(4.6)
    for k, v in ldm_vae_state_dict(vae).items():
        if k.startswith(("encoder.", "quant_conv.")):
            ckpt[f"conditioner.embedders.1.encoder.{k}"] = v
        else:
            ckpt[f"first_stage_model.{k}"] = v
    if temporal_decoder:
        g = torch.Generator().manual_seed(seed + 1)
        ckpt["first_stage_model.decoder.conv_out.time_mix_conv.weight"] = torch.randn(3, 3, 3, 1, 1, generator=g)
        ckpt["first_stage_model.decoder.up.0.block.0.time_stack.in_layers.0.weight"] = torch.randn(32, generator=g)
        ckpt["first_stage_model.decoder.up.0.block.0.mix_factor"] = torch.randn(1, generator=g)
    return ckpt, (unet, vae, clip)
