"""Benchmark the full-size SV3D (sv3d_p) UNet with random weights; prints a table.

CPU (default when no GPU): one UNet call, 21 frames at a 72x72 latent (576x576 images), bf16.
On CUDA additionally: seconds per sampling step (cond + uncond batched: 42 frames), a full
orbit (default 50 steps, CLIP ViT-H/14 + image VAE + UNet, all random) and peak VRAM with and
without model CPU offload.

    python benchmarks/sv3d_unet.py                       # CPU, one call (minutes on 2 cores)
    python benchmarks/sv3d_unet.py --device cuda --steps 50

Random weights: the numbers are speed/memory only; never run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def build_full_pipeline(dtype, with_encoders: bool):
    """Full-size random SV3D modules (UNet 1.5B, optionally CLIP ViT-H/14 and the image VAE)."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from orbitmesh.models.video.convert import build_unet
    from orbitmesh.models.video.pipeline import SV3DPipeline
    from orbitmesh.models.video.tiny import SV3D_P_SGM_CONFIG

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # create the weights directly in the benchmark dtype (half the RAM)
    try:
        unet = build_unet(SV3D_P_SGM_CONFIG).eval()
        vae = clip = None
        if with_encoders:
            vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                                use_post_quant_conv=False).eval()
            clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")).eval()
    finally:
        torch.set_default_dtype(previous)
    return SV3DPipeline(unet, vae, clip) if with_encoders else unet


def unet_call_seconds(unet, device: str, dtype, frames: int, latent: int, batch: int, repeats: int) -> list[float]:
    """Wall time of ``repeats`` UNet calls on (batch, frames, 8, latent, latent)."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, 8, latent, latent, generator=g).to(device, dtype)
    ctx = torch.randn(batch, 1, 1024, generator=g).to(device, dtype)
    y = torch.randn(batch * frames, 1280, generator=g).to(device, dtype)
    t = torch.full((batch * frames,), 0.25 * 3.0, device=device, dtype=dtype)
    out = []
    with torch.no_grad():
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            unet(x, t, ctx, y)
            if device == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    import torch

    from orbitmesh.device import resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--frames", type=int, default=21)
    parser.add_argument("--latent", type=int, default=72, help="latent size (image size / 8)")
    parser.add_argument("--steps", type=int, default=50, help="CUDA: sampling steps of the full orbit")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    result: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores, "
                    f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
                    "dtype": args.dtype, "frames": args.frames, "latent": f"{args.latent}x{args.latent}"}

    t0 = time.perf_counter()
    if device != "cuda":
        unet = build_full_pipeline(dtype, with_encoders=False)
        result["unet_params_M"] = round(sum(p.numel() for p in unet.parameters()) / 1e6, 1)
        result["build_s"] = round(time.perf_counter() - t0, 1)
        cpu0 = time.process_time()
        result["unet_call_s"] = round(unet_call_seconds(unet, "cpu", dtype, args.frames, args.latent, 1, 1)[0], 2)
        # CPU seconds of the call: on a busy machine, cpu_s / threads estimates the quiet wall time.
        result["unet_call_cpu_s"] = round(time.process_time() - cpu0, 1)
        import resource

        result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # Linux: KiB
    else:
        from PIL import Image

        from orbitmesh.pipeline.orbit import OrbitConfig, generate_orbit

        pipe = build_full_pipeline(dtype, with_encoders=True)
        result["unet_params_M"] = round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 1)
        pipe.dtype, pipe.device = dtype, "cuda"
        pipe.to("cuda", dtype)
        unet_call_seconds(pipe.unet, "cuda", dtype, args.frames, args.latent, 2, 1)  # warm-up
        calls = unet_call_seconds(pipe.unet, "cuda", dtype, args.frames, args.latent, 2, 3)
        result["step_s"] = round(min(calls), 3)
        image = Image.new("RGB", (args.latent * 8, args.latent * 8), "white")
        cfg = OrbitConfig(steps=args.steps, num_frames=args.frames, size=args.latent * 8)
        for offload in (False, True):
            if offload:
                pipe.enable_low_memory()  # CPU offload + one guidance branch at a time + chunked FF
            pipe.to("cuda", dtype)
            torch.cuda.empty_cache()
            t1 = time.perf_counter()
            out = generate_orbit(pipe, image, cfg)
            tag = "offload" if offload else "no_offload"
            result[f"orbit_{args.steps}_steps_s_{tag}"] = round(time.perf_counter() - t1, 2)
            result[f"peak_vram_gb_{tag}"] = round(out.peak_vram_bytes / 2**30, 2)
    if args.json:
        print(json.dumps(result))
        return
    width = max(len(k) for k in result)
    print("SV3D UNet benchmark (random weights)")
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
