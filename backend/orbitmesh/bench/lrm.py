"""Full-size VFusion3D LRM forward with random weights: encoder, transformer, grid query, peak memory.

One run: builds the ``vfusion3d`` config with random weights (nothing downloaded), encodes one
512x512 image, runs the triplane transformer, then queries density grids. A 512^3 grid can take
many minutes on a CPU: ``--grid512 extrapolate`` (default) times ``--chunks`` chunks of it and
scales by the chunk count (reported as extrapolated); ``--grid512 full`` runs it all.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--grid", type=int, nargs="*", default=[256], help="grid resolutions run in full")
    parser.add_argument("--grid512", choices=("extrapolate", "full", "skip"), default="extrapolate")
    parser.add_argument("--chunks", type=int, default=8, help="512^3 chunks timed when extrapolating")
    parser.add_argument("--config", default="vfusion3d", help="LRM preset (vfusion3d or tiny)")


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)


def run(args: argparse.Namespace) -> dict:
    import torch

    from orbitmesh.device import resolve_device, resolve_dtype
    from orbitmesh.models.lrm import LRM, preset
    from orbitmesh.pipeline.reconstruct import GRID_CHUNK, autocast_context, density_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    compute_dtype = resolve_dtype("auto", device)
    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    out: dict = {"config": args.config, "device": device, "threads": torch.get_num_threads(),
                 "compute_dtype": str(compute_dtype).replace("torch.", "")}
    import transformers.models.dinov2.modeling_dinov2  # noqa: F401  (import time is not build time)

    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = LRM(preset(args.config)).eval().to(device)
    out["build_s"] = time.perf_counter() - t0
    out["parameters"] = sum(p.numel() for p in model.parameters())
    out["parameters_encoder"] = sum(p.numel() for p in model.encoder.parameters())
    out["parameters_transformer"] = sum(p.numel() for p in model.transformer.parameters())
    size = model.config.input_size
    image = torch.rand(1, 3, size, size, device=device)
    with torch.no_grad(), autocast_context(device, compute_dtype):
        model.encoder(image[..., :28, :28])  # warm-up (kernels, lazy init)
        sync()
        t0 = time.perf_counter()
        feats = model.encoder(image)
        sync()
        out["encoder_s"] = time.perf_counter() - t0
        out["image_tokens"] = feats.shape[1]
        t0 = time.perf_counter()
        planes = model.transformer(feats, model.camera_embedder(model.default_source_camera().to(feats.dtype)))
        sync()
        out["transformer_s"] = time.perf_counter() - t0
    planes = planes.float()
    out["planes_shape"] = "x".join(map(str, planes.shape[1:]))
    for r in args.grid:
        t0 = time.perf_counter()
        density_grid(model, planes, r)
        sync()
        out[f"grid_{r}_s"] = time.perf_counter() - t0
    if args.grid512 == "full":
        t0 = time.perf_counter()
        density_grid(model, planes, 512)
        sync()
        out["grid_512_s"] = time.perf_counter() - t0
    elif args.grid512 == "extrapolate":
        # 512^3 = 512 x-slabs of 512^2 points; one chunk of GRID_CHUNK points is one slab.
        from orbitmesh.pipeline.reconstruct import lrm_points_from_output

        total_chunks = 512 ** 3 // GRID_CHUNK
        axis_slabs = min(args.chunks, total_chunks)

        axis = torch.linspace(-1, 1, 512, device=device)
        yz = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(axis_slabs):
                pts = torch.cat([axis[i * 64 % 512].expand(len(yz), 1), yz], 1)
                model.query_raw(planes, lrm_points_from_output(pts)[None])["sigma"].cpu()
        sync()
        per_chunk = (time.perf_counter() - t0) / axis_slabs
        out["grid_512_s_extrapolated"] = per_chunk * total_chunks
        out["grid_512_chunks_timed"] = f"{axis_slabs} of {total_chunks}"
    out["peak_rss_mb"] = _peak_rss_mb()
    if cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def format_table(result: dict) -> str:
    lines = ["LRM forward benchmark (random weights)", ""]
    width = max(len(k) for k in result)
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.2f}"
        elif isinstance(value, int) and value > 10_000:
            value = f"{value:,}"
        lines.append(f"  {key:<{width}}  {value}")
    return "\n".join(lines)
