"""Reference parity for the SV3D UNet fixture (``sv3d_unet_reference_tiny.safetensors``).

The fixture holds an SGM ``VideoUNet`` (config in the metadata ``unet_config``) under the
checkpoint prefix ``model.diffusion_model.``, the inputs ``in.*`` and the reference outputs
``out.*`` of one SGM denoiser call. We build our UNet from that config, load the weights through
the converter, and return the max abs error of each output (tolerance 1e-4).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from orbitmesh.errors import ModelError

TOLERANCE = 1e-4


def run_fixture(path: str | Path) -> dict[str, float]:
    """Max abs error per reference output: ``y``, ``c_noise``, ``unet_input``, ``unet_output``, ``denoised``."""
    from orbitmesh.models.video.conditioning import vector_conditioning
    from orbitmesh.models.video.convert import UNET_PREFIX, read_checkpoint, unet_from_sgm
    from orbitmesh.models.video.sampler import denoise

    tensors, metadata = read_checkpoint(path)
    if "unet_config" not in metadata:
        raise ModelError(f"{Path(path).name} has no unet_config in its metadata: not an SV3D UNet fixture",
                         fix="pass sv3d_unet_reference_tiny.safetensors")
    sgm = json.loads(metadata["unet_config"])
    frames = int(metadata.get("num_frames", tensors["in.noisy_latent"].shape[0]))
    unet_sd = {k[len(UNET_PREFIX):]: v for k, v in tensors.items() if k.startswith(UNET_PREFIX)}
    unet = unet_from_sgm(unet_sd, sgm).float()

    inp = {k[3:]: v.float() for k, v in tensors.items() if k.startswith("in.")}
    with torch.no_grad():
        cameras = (inp["polars_rad"], inp["azimuths_rad"]) if unet.adm_in_channels > 256 else (None, None)
        y = vector_conditioning(inp["cond_aug"], *cameras)
        denoised, parts = denoise(unet, inp["noisy_latent"], inp["sigma"], inp["cond_latent"], inp["context"], y,
                                  frames, image_only_indicator=inp.get("image_only_indicator"))
    ours = {"y": y, "denoised": denoised, **parts}
    return {name: float((ours[name] - tensors[f"out.{name}"].float()).abs().max())
            for name in ("y", "c_noise", "unet_input", "unet_output", "denoised") if f"out.{name}" in tensors}
