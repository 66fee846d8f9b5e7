"""Reconstruction models side by side with random weights: parameters, encoder, backbone, grid query, peak memory.

One run builds each of ``--models`` (full size: VFusion3D's ``vfusion3d`` preset and TripoSR's
released ``triposr`` config; ``--size tiny``: their tiny configs, for tests) with random weights
(nothing downloaded), one at a time: the model is freed before the next one is built, and peak
RSS is reset between models where Linux allows it (``/proc/self/clear_refs``), so each model's
``peak_rss_mb`` is its own. Per model: the forward on one random image at the model's input size,
split at the encoder (the time to the forward's "encoder" progress call; the rest is the
backbone/transformer plus the plane upsampling), then the density grid at each ``--grid``
resolution with the pipeline's narrow-band method (``band``:
:func:`orbitmesh.pipeline.reconstruct.band_density_grid`) and, with ``--dense``, every point
through the factorised decoder.

Random weights put no density near a trained model's threshold (TripoSR's 25 on exp(raw - 1) is
never reached), so the band would meet no surface. Each model keeps its released threshold and
its decoder's density bias is shifted instead: on a coarse grid, the activated density's
``CALIBRATION_QUANTILE`` quantile is moved onto the threshold (the densest 10% of the box is
inside, as the pipeline's adaptive threshold for random models).
"""

from __future__ import annotations

import gc
import resource
import sys
import time
from typing import Sequence

from orbitmesh.errors import InputError

MODELS = ("vfusion3d", "triposr")
SIZES = ("full", "tiny")
PRESETS = {"full": {"vfusion3d": "vfusion3d", "triposr": "triposr"}, "tiny": {"vfusion3d": "tiny", "triposr": "tiny"}}
CALIBRATION_GRID = 32  # coarse grid the density bias is calibrated on
CALIBRATION_QUANTILE = 0.9  # orbitmesh.pipeline.reconstruct.ADAPTIVE_QUANTILE: the densest 10% is inside
# model kind -> (encoder, backbone) submodule names, for the parameter counts
PARTS = {"vfusion3d": ("encoder", "transformer"), "triposr": ("image_tokenizer", "backbone")}


def run(*, models: Sequence[str] = MODELS, size: str = "full", device: str = "auto", threads: int = 0,
        grid: Sequence[int] = (256,), dense: bool = False) -> dict:
    """Time each of ``models`` (see the module docstring) -> {"device", "threads", "compute_dtype", "size",
    "models": {name: {parameters, parameters_encoder, parameters_backbone, build_s, encoder_s, backbone_s,
    planes_shape, threshold, density_shift, grid_<R>_s, grid_<R>_cpu_s, grid_<R>_band_fraction,
    [grid_<R>_dense_s, grid_<R>_dense_cpu_s], peak_rss_mb, [peak_gpu_mb]}}}.

    ``size``: "full" (the released configs) or "tiny"; ``threads``: torch CPU threads (0: torch's default);
    ``grid``: density grid resolutions; ``dense``: also time the factorised full grid.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise InputError(f"unknown model(s) {', '.join(unknown) or '(none given)'}",
                         fix=f"choose from {', '.join(MODELS)}")
    if size not in SIZES:
        raise InputError(f"size must be one of {', '.join(SIZES)}, got {size!r}", fix="e.g. size='full'")

    import torch

    from orbitmesh.device import resolve_device, resolve_dtype

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    compute_dtype = resolve_dtype("auto", device)
    out: dict = {"size": size, "device": device, "threads": torch.get_num_threads(),
                 "compute_dtype": str(compute_dtype).replace("torch.", ""), "models": {}}
    for name in dict.fromkeys(models):  # in order, once each
        out["models"][name] = _bench_model(name, PRESETS[size][name], device, compute_dtype, grid, dense)
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def _build(kind: str, preset_name: str):
    if kind == "vfusion3d":
        from orbitmesh.models.lrm import LRM, preset

        return LRM(preset(preset_name))
    from orbitmesh.models.triposr import TripoSR, preset

    return TripoSR(preset(preset_name))


def _bench_model(kind: str, preset_name: str, device: str, compute_dtype, grid: Sequence[int], dense: bool) -> dict:
    import torch

    from orbitmesh.pipeline.reconstruct import autocast_context, band_density_grid, density_grid

    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    # import the architecture before timing the build (import time is not build time)
    import transformers.models.dinov2.modeling_dinov2  # noqa: F401
    import transformers.models.vit.modeling_vit  # noqa: F401

    import orbitmesh.models.lrm.model  # noqa: F401
    import orbitmesh.models.triposr.model  # noqa: F401

    gc.collect()
    reset = _reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    res: dict = {"preset": preset_name}
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = _build(kind, preset_name).eval().to(device)
    res["build_s"] = time.perf_counter() - t0
    encoder, backbone = (getattr(model, part) for part in PARTS[kind])
    res["parameters"] = sum(p.numel() for p in model.parameters())
    res["parameters_encoder"] = sum(p.numel() for p in encoder.parameters())
    res["parameters_backbone"] = sum(p.numel() for p in backbone.parameters())
    size = model.config.input_size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    marks: dict[str, float] = {}

    def progress(part: str, step: int, total: int) -> None:
        if part == "encoder":
            sync()
            marks["encoder"] = time.perf_counter()

    with torch.no_grad(), autocast_context(device, compute_dtype):
        if cuda:  # warm-up (kernels, lazy init) where it is cheap
            model(image)
            sync()
        t0 = time.perf_counter()
        planes = model(image, progress=progress)
        sync()
        t1 = time.perf_counter()
    res["encoder_s"] = marks["encoder"] - t0
    res["backbone_s"] = t1 - marks["encoder"]
    planes = planes.float()
    res["planes_shape"] = "x".join(map(str, planes.shape[1:]))
    res["threshold"] = model.config.mesh_threshold  # None: the adaptive quantile (tiny VFusion3D)
    res["density_shift"] = calibrate_density(model, planes)
    for r in grid:
        (wall, cpu), band = _timed(lambda r=r: band_density_grid(model, planes, r), sync)
        res[f"grid_{r}_s"], res[f"grid_{r}_cpu_s"] = wall, cpu
        res[f"grid_{r}_band_fraction"] = band.evaluated_fraction
        res[f"grid_{r}_inside_fraction"] = float((band.density > band.threshold).mean())
        del band
        if dense:
            (wall, cpu), _ = _timed(lambda r=r: density_grid(model, planes, r, method="dense"), sync)
            res[f"grid_{r}_dense_s"], res[f"grid_{r}_dense_cpu_s"] = wall, cpu
    res["peak_rss_mb"] = _peak_rss_mb()
    res["peak_rss_scope"] = "model" if reset else "process"
    if cuda:
        res["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return res  # the model and its planes are freed here, before the next model is built


def density_layer(model):
    """The decoder's last Linear, whose output 0 is the raw density (both architectures)."""
    from torch import nn

    decoder = model.synthesizer.decoder if hasattr(model, "synthesizer") else model.decoder
    return [m for m in decoder.modules() if isinstance(m, nn.Linear)][-1]


def calibrate_density(model, planes, *, resolution: int = CALIBRATION_GRID, quantile: float = CALIBRATION_QUANTILE
                      ) -> float:
    """Shift ``model``'s raw density bias so that the ``quantile`` of the activated density on a coarse grid
    sits at ``model.config.mesh_threshold``; returns the shift (0.0 for an adaptive-threshold model).

    The activation is monotonic, so the quantile moves with the raw value: the shift is
    ``inverse(threshold) - inverse(q)``, the inverse found by bisection on the model's own activation.
    """
    import numpy as np
    import torch

    from orbitmesh.pipeline.reconstruct import density_grid

    threshold = model.config.mesh_threshold
    if threshold is None:
        return 0.0
    layer = density_layer(model)
    if layer.bias is None:
        raise InputError("the decoder's last layer has no bias to calibrate", fix="use a config with decoder.bias")
    q = float(np.quantile(density_grid(model, planes, resolution, method="dense"), quantile))
    shift = _inverse_activation(model, threshold) - _inverse_activation(model, q)
    with torch.no_grad():
        layer.bias[0] += shift
    return shift


def _inverse_activation(model, y: float) -> float:
    """raw such that ``model.activate_density(raw) == y`` (monotonic increasing activation), by bisection."""
    import torch

    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(model.activate_density(torch.tensor(mid, dtype=torch.float64))) < y:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _timed(fn, sync) -> tuple[tuple[float, float], object]:
    """((wall s, process CPU s), result) of fn()."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    sync()
    return (time.perf_counter() - t0, time.process_time() - c0), result


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux: VmHWM through clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """Peak RSS since the last :func:`_reset_peak_rss` (Linux VmHWM), else the process's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)


ROWS = (("parameters", "parameters"), ("parameters_encoder", "  encoder"), ("parameters_backbone", "  backbone"),
        ("build_s", "build s"), ("encoder_s", "encoder s"), ("backbone_s", "backbone s"),
        ("planes_shape", "planes"), ("threshold", "threshold"), ("density_shift", "density bias shift"))


def format_table(result: dict) -> str:
    models = result["models"]
    names = list(models)
    keys = list(ROWS)
    grid_keys = [k for k in dict.fromkeys(k for m in models.values() for k in m) if k.startswith("grid_")]
    keys += [(k, _grid_label(k)) for k in grid_keys]
    keys += [("peak_rss_mb", "peak RSS MB"), ("peak_gpu_mb", "peak GPU MB")]
    keys = [(k, label) for k, label in keys if any(k in m for m in models.values())]
    rows = [[label, *(_cell(k, models[n].get(k)) for n in names)] for k, label in keys]
    header = ["", *names]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    title = (f"Reconstruction models, {result['size']} size, random weights ({result['device']}, "
             f"{result['threads']} threads, {result['compute_dtype']})")
    scopes = {m.get("peak_rss_scope") for m in models.values()}
    note = [] if scopes <= {"model"} else ["", "peak RSS: the process's (could not be reset between models)"]
    return "\n".join([title, "", line(header), *map(line, rows), *note])


def _grid_label(key: str) -> str:
    r, _, rest = key.removeprefix("grid_").partition("_")
    label = {"s": "band s", "cpu_s": "band CPU s", "band_fraction": "band fraction",
             "inside_fraction": "inside fraction", "dense_s": "dense s", "dense_cpu_s": "dense CPU s"}.get(rest, rest)
    return f"grid {r}^3 {label}"


def _cell(key: str, value) -> str:
    if value is None:
        return "-" if key != "threshold" else "adaptive"
    if isinstance(value, float):
        return f"{value:.4f}" if key.endswith("fraction") else f"{value:.2f}"
    if isinstance(value, int) and value > 10_000:
        return f"{value:,}"
    return str(value)
