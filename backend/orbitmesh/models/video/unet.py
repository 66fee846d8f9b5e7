"""The SV3D video UNet: diffusers' ``UNetSpatioTemporalConditionModel`` with per-frame added conditioning.

SGM's ``VideoUNet`` (as released with SV3D) has the same modules as diffusers' SVD UNet. Two
things differ and are adapted here, nothing else is re-implemented:

* the vector conditioning ``y`` (SGM ``label_emb`` = diffusers ``add_embedding``) is given per
  frame (cond_aug and the frame's camera), not computed from 3 scalars per video and repeated;
  the timestep (``c_noise``) may also differ per frame;
* SGM normalises every res block with GroupNorm eps 1e-5, while diffusers builds the resnets of
  its cross-attention blocks with 1e-6; we set 1e-5 so converted checkpoints match the reference.
"""

from __future__ import annotations

import functools

import torch
from diffusers.models.resnet import SpatioTemporalResBlock
from diffusers.models.unets.unet_spatio_temporal_condition import (
    UNetSpatioTemporalConditionModel,
    UNetSpatioTemporalConditionOutput,
)

SGM_RESBLOCK_EPS = 1e-5


class SV3DUNet(UNetSpatioTemporalConditionModel):
    """``add_embedding`` takes ``projection_class_embeddings_input_dim`` numbers per frame
    (1280 for sv3d_p, 256 for sv3d_u); ``add_time_proj`` is unused."""

    # Same signature as the parent, so diffusers' config loading sees the real parameters.
    @functools.wraps(UNetSpatioTemporalConditionModel.__init__)
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for module in self.modules():
            if isinstance(module, SpatioTemporalResBlock):
                for norm in (module.spatial_res_block.norm1, module.spatial_res_block.norm2,
                             module.temporal_res_block.norm1, module.temporal_res_block.norm2):
                    norm.eps = SGM_RESBLOCK_EPS

    @property
    def adm_in_channels(self) -> int:
        return int(self.config.projection_class_embeddings_input_dim)

    def frame_embedding(self, timestep: torch.Tensor | float, added_cond: torch.Tensor,
                        batch_frames: int, dtype: torch.dtype) -> torch.Tensor:
        """(B*F, time_embed_dim): time embedding of each frame's timestep + its ``add_embedding(y)``."""
        t = torch.as_tensor(timestep, device=added_cond.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch_frames)
        elif t.numel() != batch_frames:  # one timestep per video -> one per frame
            t = t.repeat_interleave(batch_frames // t.numel())
        emb = self.time_embedding(self.time_proj(t).to(dtype))
        y = added_cond.reshape(batch_frames, -1)
        if y.shape[1] != self.adm_in_channels:
            raise ValueError(f"added_cond has {y.shape[1]} numbers per frame, the UNet expects "
                             f"{self.adm_in_channels}")
        return emb + self.add_embedding(y.to(dtype))

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        added_cond: torch.Tensor,
        image_only_indicator: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNetSpatioTemporalConditionOutput | tuple:
        """sample (B, F, C, H, W); timestep scalar, (B,) or (B*F,) (SGM ``c_noise``);
        encoder_hidden_states (B, L, D) per video or (B*F, L, D) per frame; added_cond
        (B, F, adm) or (B*F, adm). Returns (B, F, out_channels, H, W)."""
        batch, frames = sample.shape[:2]
        emb = self.frame_embedding(timestep, added_cond, batch * frames, sample.dtype)
        context = encoder_hidden_states
        if context.shape[0] == batch and frames > 1:
            context = context.repeat_interleave(frames, dim=0)
        if image_only_indicator is None:
            image_only_indicator = torch.zeros(batch, frames, dtype=sample.dtype, device=sample.device)
        out = self._run_blocks(sample.flatten(0, 1), emb, context, image_only_indicator)
        out = out.reshape(batch, frames, *out.shape[1:])
        return UNetSpatioTemporalConditionOutput(sample=out) if return_dict else (out,)

    def _run_blocks(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor,
                    indicator: torch.Tensor) -> torch.Tensor:
        """The UNet body of the parent class, with the per-frame ``emb`` already computed."""
        upsample_size = None
        forward_upsample_size = any(s % 2**self.num_upsamplers for s in h.shape[-2:])
        h = self.conv_in(h)
        skips: tuple[torch.Tensor, ...] = (h,)
        for block in self.down_blocks:
            kwargs = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            h, res = block(hidden_states=h, temb=emb, image_only_indicator=indicator, **kwargs)
            skips += res
        h = self.mid_block(hidden_states=h, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)
        for i, block in enumerate(self.up_blocks):
            res, skips = skips[-len(block.resnets):], skips[:-len(block.resnets)]
            if i < len(self.up_blocks) - 1 and forward_upsample_size:
                upsample_size = skips[-1].shape[2:]
            kwargs = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size,
                      image_only_indicator=indicator, **kwargs)
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))
