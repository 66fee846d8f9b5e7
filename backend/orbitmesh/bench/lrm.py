"""Full-size VFusion3D LRM forward with random weights: encoder, transformer, grid query, peak memory.

One run: builds the ``vfusion3d`` config with random weights (nothing downloaded), encodes one
512x512 image, runs the triplane transformer, then times the density grid at each ``--grid``
resolution (wall and CPU seconds) with the pipeline's narrow-band method (``band``), the
factorised full grid (``dense``, with ``--dense``) and the reference per-point query
(``points``, the brute-force baseline: ``--baseline extrapolate`` times ``--chunks`` chunks and
scales by the chunk count, ``full`` runs it all). Random weights give a noise field whose
top-10% surface fills the box, so the band is also timed on an analytic object (``blob``:
:func:`blob_field`, same decoder size) to show the band on a realistic surface.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import replace
from typing import Sequence

from orbitmesh.errors import InputError

BASELINES = ("extrapolate", "full", "skip")


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)


def run(*, device: str = "auto", threads: int = 0, grid: Sequence[int] = (256, 512), dense: bool = False,
        baseline: str = "extrapolate", chunks: int = 4, blob: bool = True, config: str = "vfusion3d") -> dict:
    """Build the ``config`` LRM preset with random weights on ``device`` and time it (see the module docstring).

    ``threads``: torch CPU threads (0: torch's default); ``grid``: density grid resolutions;
    ``dense``: also time the factorised full grid; ``baseline``: the brute-force per-point grid
    ("extrapolate" from ``chunks`` chunks, "full" or "skip"); ``blob``: also time the band on an
    analytic object.
    """
    if baseline not in BASELINES:
        raise InputError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}",
                         fix="e.g. baseline='extrapolate'")

    import torch

    from orbitmesh.device import resolve_device, resolve_dtype
    from orbitmesh.models.lrm import LRM, preset
    from orbitmesh.pipeline.reconstruct import autocast_context, band_density_grid

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    compute_dtype = resolve_dtype("auto", device)
    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    out: dict = {"config": config, "device": device, "threads": torch.get_num_threads(),
                 "compute_dtype": str(compute_dtype).replace("torch.", "")}
    import transformers.models.dinov2.modeling_dinov2  # noqa: F401  (import time is not build time)

    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = LRM(preset(config)).eval().to(device)
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
    # random weights: the adaptive threshold (top-10% density), as the pipeline uses for random models
    model.config = replace(model.config, mesh_threshold=None)
    for r in grid:
        _time_grids(out, model, planes, r, sync, dense=dense, baseline=baseline, chunks=chunks)
    if blob:
        blob_planes = blob_field(model)  # overwrites the decoder: after the random-weight timings
        model.config = replace(model.config, mesh_threshold=1.0)
        for r in grid:
            (wall, cpu), band = _timed(lambda r=r: band_density_grid(model, blob_planes, r), sync)
            out[f"grid_{r}_blob_band_s"], out[f"grid_{r}_blob_band_cpu_s"] = wall, cpu
            out[f"grid_{r}_blob_band_fraction"] = band.evaluated_fraction
    out["peak_rss_mb"] = _peak_rss_mb()
    if cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def _timed(fn, sync) -> tuple[tuple[float, float], object]:
    """((wall s, process CPU s), result) of fn()."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    sync()
    return (time.perf_counter() - t0, time.process_time() - c0), result


def _time_grids(out: dict, model, planes, r: int, sync, *, dense: bool, baseline: str, chunks: int) -> None:
    """Band (the pipeline default), optional dense, and the brute-force baseline at R = r."""
    import torch

    from orbitmesh.pipeline.reconstruct import GRID_CHUNK, band_density_grid, density_grid, lrm_points_from_output

    (wall, cpu), band = _timed(lambda: band_density_grid(model, planes, r), sync)
    out[f"grid_{r}_s"], out[f"grid_{r}_cpu_s"] = wall, cpu
    out[f"grid_{r}_band_fraction"] = band.evaluated_fraction
    if dense:
        (wall, cpu), _ = _timed(lambda: density_grid(model, planes, r, method="dense"), sync)
        out[f"grid_{r}_dense_s"], out[f"grid_{r}_dense_cpu_s"] = wall, cpu
    if baseline == "full":
        (wall, cpu), _ = _timed(lambda: density_grid(model, planes, r, method="points"), sync)
        out[f"grid_{r}_points_s"], out[f"grid_{r}_points_cpu_s"] = wall, cpu
    elif baseline == "extrapolate":
        # the per-point query on a few GRID_CHUNK-point x-slab chunks spread over the grid
        axis = torch.linspace(model.config.bbox_min, model.config.bbox_max, r, device=planes.device)
        yz = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        slabs = max(1, GRID_CHUNK // (r * r))
        total_chunks = -(-r // slabs)
        timed = min(chunks, total_chunks)

        def timed_chunks() -> None:
            with torch.inference_mode():
                for c in range(timed):
                    i0 = (c * total_chunks // timed) * slabs
                    xs = axis[i0:i0 + slabs]
                    pts = torch.cat([xs.repeat_interleave(len(yz))[:, None], yz.repeat(len(xs), 1)], 1)
                    model.query_raw(planes, lrm_points_from_output(pts)[None])["sigma"].cpu()

        (wall, cpu), _ = _timed(timed_chunks, sync)
        out[f"grid_{r}_points_s_extrapolated"] = wall / timed * total_chunks
        out[f"grid_{r}_points_cpu_s_extrapolated"] = cpu / timed * total_chunks
        out[f"grid_{r}_points_chunks_timed"] = f"{timed} of {total_chunks}"


def blob_field(model, texels: int | None = None, seed: int = 0):
    """Turn ``model``'s decoder into an analytic field and return matching planes (1, 3, C, T, T).

    A realistic object for grid benchmarks and tests (random weights give a noisy field whose
    top-10% density surface fills the box): a bumpy ellipsoid plus a small separate blob, i.e.
    density = softplus(raw - 1) with raw = 8 (relu(1 - s0) + relu(1 - s1)) - 2, where s0, s1 are
    sums of per-plane terms (quadrics + low-frequency waves, channels 0 and 1). Decoder weights
    are overwritten in place; other channels get small noise (they feed nothing).
    """
    import torch

    dec = model.synthesizer.decoder
    c = model.config.triplane_dim
    t = texels or model.config.triplane_high_res
    g = torch.Generator().manual_seed(seed)
    centres = (torch.arange(t) * 2 + 1) / t - 1  # texel centres (align_corners False)
    v, u = torch.meshgrid(centres, centres, indexing="ij")  # plane[h, w] at (u = w coord, v = h coord)
    planes = 0.01 * torch.randn(1, 3, c, t, t, generator=g)
    # s0 = (X/.55)^2 + (Y/.45)^2 + (Z/.7)^2 + waves; s1 = |(X, Y, Z) - (.55, .55, .6)|^2 / .18^2
    planes[0, 0, 0] = (u / 0.55) ** 2 + (v / 0.45) ** 2 + 0.25 * torch.sin(5 * u) * torch.cos(4 * v)
    planes[0, 1, 0] = (v / 0.7) ** 2 + 0.2 * torch.sin(6 * v + 2 * u)  # xz plane: u = X, v = Z
    planes[0, 2, 0] = 0.15 * torch.cos(5 * u + 3 * v)  # zy plane: u = Z, v = Y
    planes[0, 0, 1] = ((u - 0.55) ** 2 + (v - 0.55) ** 2) / 0.18 ** 2
    planes[0, 1, 1] = (v - 0.6) ** 2 / 0.18 ** 2
    planes[0, 2, 1] = 0.0
    with torch.no_grad():
        for layer in dec.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        first, *mid, last = [m for m in dec.net if isinstance(m, torch.nn.Linear)]
        for p in range(3):  # h0 = 1 - s0, h1 = 1 - s1
            first.weight[0, p * c] = -1.0
            first.weight[1, p * c + 1] = -1.0
        first.bias[:2] = 1.0
        for layer in mid:  # pass the two ReLU'd units through
            layer.weight[0, 0] = layer.weight[1, 1] = 1.0
        last.weight[0, :2] = 8.0
        last.bias[0] = -2.0
        last.weight[1:, 0] = 2.0  # some colour
    return planes.to(model.device)


def format_table(result: dict) -> str:
    lines = ["LRM forward benchmark (random weights)", ""]
    width = max(len(k) for k in result)
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4f}" if key.endswith("fraction") else f"{value:.2f}"
        elif isinstance(value, int) and value > 10_000:
            value = f"{value:,}"
        lines.append(f"  {key:<{width}}  {value}")
    return "\n".join(lines)
