"""Reconstruction stages: image -> triplane (LRM), triplane -> density grid + colour function.

Orientation. The LRM's world is the reference's: +z up, the input view seen from +x (image
right = +y). We hand the mesh stage a field in an *output* frame turned -90 degrees about z,
(x, y, z)_out = (y, -x, z)_lrm, so the input view looks from -y. The mesh stage writes glTF
Y-up ((x, y, z) -> (x, z, -y)) and Blender's importer turns that back into Z-up, so in
Blender the object stands upright (+Z) and its input-view side faces -Y: the viewer in
Blender's front view (numpad 1, looking along +Y) sees the input image, unmirrored.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import numpy as np

from orbitmesh.errors import InputError, ModelError
from orbitmesh.pipeline import modes
from orbitmesh.pipeline.orchestrator import StageContext

LRM_STAGE = modes.LRM
GRID_STAGE = modes.GRID_QUERY
GRID_CHUNK = 2 ** 18  # points per chunk: ~250 MB of plane features on the GPU, fits 8 GB at 512^3
ADAPTIVE_QUANTILE = 0.9  # random-weight models: the densest 10% of the box is "inside"


def lrm_points_from_output(points):
    """(N, 3) output-frame points -> LRM-frame points: (x, y, z)_lrm = (-y, x, z)_out (torch or numpy)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    if isinstance(points, np.ndarray):
        return np.stack([-y, x, z], -1)
    import torch

    return torch.stack([-y, x, z], -1)


def image_to_tensor(image, size: int):
    """PIL RGB -> (1, 3, size, size) float32 in [0, 1] (bicubic resize only when the model wants another size)."""
    import torch
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    arr = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def autocast_context(device: str, dtype):
    """Mixed precision for the encoder/transformer on GPUs; nothing on CPU or in float32."""
    import torch

    if device == "cpu" or dtype in (None, torch.float32):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)


class LRMStage:
    """``state.image`` (PIL RGB on white) -> ``state.planes`` (1, 3, C, H, W) float32 and ``state.lrm``
    (the model). ``load(notify)`` returns the loaded LRM (float32 weights). A model whose config asks for
    its own framing (TripoSR: ``foreground_ratio`` on ``background_grey``) gets the object recentred that
    way from the preprocessed cut-out, saved as ``model_input.png``."""

    name = LRM_STAGE
    needs = ("image",)
    gives = ("lrm", "planes")

    def __init__(self, load: Callable[[Callable[[str], None]], object], *, device: str, compute_dtype=None) -> None:
        self.load, self.device, self.compute_dtype = load, device, compute_dtype

    def run(self, ctx: StageContext) -> None:
        import torch

        notes: list[str] = []

        def notify(message: str) -> None:
            notes.append(message)
            ctx.progress(LRM_STAGE, 0, 1, message)

        ctx.progress(LRM_STAGE, 0, 1, "loading the reconstruction model")
        model = self.load(notify)
        total = 1 + model.config.transformer_layers

        def report(part: str, step: int, n: int) -> None:
            done = 1 if part == "encoder" else 1 + step
            ctx.progress(LRM_STAGE, done, total, f"{part} {step}/{n}")

        image = image_to_tensor(model_input(model.config, ctx), model.config.input_size).to(self.device)
        with torch.no_grad(), autocast_context(self.device, self.compute_dtype):
            planes = model(image, progress=report)
        planes = planes.float()
        if not torch.isfinite(planes).all():
            raise ModelError("the reconstruction model produced NaN/inf triplanes",
                             fix="use --dtype float32, or check the model weights")
        ctx.state.lrm, ctx.state.planes = model, planes
        ctx.job.update(lrm={"config": model.config.to_dict(), "device": self.device,
                            "compute_dtype": str(self.compute_dtype), "notes": notes})


def own_framing(config) -> tuple[float, float] | None:
    """(foreground ratio, background grey) of a model that frames its input itself (TripoSR), else None."""
    ratio, grey = getattr(config, "foreground_ratio", None), getattr(config, "background_grey", None)
    return None if ratio is None or grey is None else (float(ratio), float(grey))


def model_input(config, ctx: StageContext):
    """The PIL RGB image the model sees: the preprocessed composite on white, or, for a model with its own
    framing (``config.foreground_ratio`` / ``config.background_grey``), the object recentred at
    ``config.input_size`` from the cut-out at source resolution and composited on that grey."""
    from orbitmesh.imaging.recentre import composite_on, object_bbox, recentre

    framing, pre = own_framing(config), ctx.state.preprocess
    if framing is None or pre is None or getattr(pre, "cutout", None) is None:
        return ctx.state.image
    ratio, grey = framing
    cutout = pre.cutout
    bbox = object_bbox(np.asarray(cutout.getchannel("A"), np.float32) / 255.0)
    if bbox is None:
        return ctx.state.image
    image = composite_on(recentre(cutout, bbox, config.input_size, 1.0 - ratio), grey)
    ctx.job.save_image("model_input.png", image)
    return image


GRID_METHODS = ("band", "dense", "points")
GRID_METHOD_ENV = "ORBITMESH_GRID_METHOD"  # forces a method everywhere (debugging): band, dense or points
BAND_BLOCK = 4  # fine cells per lattice block: lattice samples = density[::4, ::4, ::4], as the adaptive threshold
BAND_DILATE = 0  # extra blocks around the band (the value margin in band_grid is the safety)


def output_grid_density(model, planes, resolution: int, chunk_size: int = GRID_CHUNK):
    """density_at(i, j, k): (M,) int64 output-frame grid indices -> (M,) float32 activated density,
    through the per-plane factorised decoder (:class:`orbitmesh.models.lrm.grid.GridTables`)."""
    import torch

    axis = torch.linspace(model.config.bbox_min, model.config.bbox_max, resolution, device=planes.device)
    # (x, y, z)_lrm = (-y, x, z)_out (lrm_points_from_output): LRM x runs along output j, y along i.
    tables = model.grid_tables(planes, (-axis, axis, axis), chunk_size)
    return lambda i, j, k: tables.density(j, i, k)


def density_grid(model, planes, resolution: int, *, chunk_size: int = GRID_CHUNK,
                 progress: Callable[[int, int], None] | None = None, method: str = "dense") -> np.ndarray:
    """(R, R, R) float32 activated density over the bbox in the output frame (indexing 'ij', x slowest),
    every point evaluated.

    ``method="dense"``: the factorised decoder; ``"points"``: the reference per-point query (grid_sample
    + full MLP), the brute-force baseline. Streams x-slabs of about ``chunk_size`` points, so memory
    stays at one chunk whatever R is; ``progress(done, total)`` after each chunk.
    """
    import torch

    if method not in ("dense", "points"):
        raise ValueError(f"density_grid method must be 'dense' or 'points', got {method!r}")
    lo, hi = model.config.bbox_min, model.config.bbox_max
    r = resolution
    axis = torch.linspace(lo, hi, r, device=planes.device)
    yz = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)  # (R*R, 2)
    j, k = (t.reshape(-1) for t in torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij"))
    density_at = output_grid_density(model, planes, r, chunk_size) if method == "dense" else None
    slabs = max(1, chunk_size // (r * r))
    out = np.empty((r, r, r), dtype=np.float32)
    total = (r + slabs - 1) // slabs
    with torch.inference_mode():
        for step, i0 in enumerate(range(0, r, slabs), start=1):
            n = min(slabs, r - i0)
            if density_at is not None:
                dens = density_at(torch.arange(i0, i0 + n).repeat_interleave(r * r), j.repeat(n), k.repeat(n))
            else:
                pts = torch.cat([axis[i0:i0 + n].repeat_interleave(r * r)[:, None], yz.repeat(n, 1)], dim=1)
                dens = model.activate_density(model.query_raw(planes, lrm_points_from_output(pts)[None])["sigma"])
            out[i0:i0 + n] = dens.reshape(n, r, r).cpu().numpy()
            if progress is not None:
                progress(step, total)
    return out


def band_density_grid(model, planes, resolution: int, *, block: int = BAND_BLOCK, dilate: int = BAND_DILATE,
                      chunk_size: int = GRID_CHUNK, progress: Callable[[int, int], None] | None = None):
    """Narrow-band grid (:func:`orbitmesh.models.lrm.grid.band_grid`) with the model's threshold ->
    ``BandGrid`` (density (R, R, R) float32 in the output frame, threshold, evaluated point count)."""
    from orbitmesh.models.lrm.grid import band_grid

    return band_grid(output_grid_density(model, planes, resolution, chunk_size), resolution,
                     lambda samples: mesh_threshold(model.config, samples, stride=1),
                     block=block, dilate=dilate, device=planes.device, progress=progress)


def make_color_fn(model, planes, chunk_size: int = GRID_CHUNK) -> Callable[[np.ndarray], np.ndarray]:
    """color_fn((N, 3) float32 output-frame points) -> (N, 3) float32 in [0, 1], from the triplane."""
    import torch

    def color_fn(points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        out = np.empty((len(pts), 3), dtype=np.float32)
        with torch.no_grad():
            for i in range(0, len(pts), chunk_size):
                p = torch.from_numpy(pts[i:i + chunk_size]).to(planes.device)
                rgb = model.query_raw(planes, lrm_points_from_output(p)[None])["rgb"][0]
                out[i:i + len(p)] = rgb.clamp(0, 1).cpu().numpy()
        return out

    return color_fn


def mesh_threshold(config, density: np.ndarray, stride: int = BAND_BLOCK) -> float:
    """The model's threshold (1.0 for VFusion3D); random-weight models (None) use a quantile of
    ``density[::stride, ::stride, ::stride]``."""
    if config.mesh_threshold is not None:
        return float(config.mesh_threshold)
    return float(np.quantile(density[::stride, ::stride, ::stride], ADAPTIVE_QUANTILE))


class GridQueryStage:
    """Triplane -> ``state.density`` (R, R, R) float32 (output frame), ``state.color_fn``,
    ``state.threshold``; progress per chunk (cancellable between chunks).

    ``method``: "band" (default: lattice + narrow band, factorised decoder), "dense" (every point,
    factorised) or "points" (every point, reference per-point query: the brute-force baseline);
    the ``ORBITMESH_GRID_METHOD`` environment variable overrides it.
    """

    name = GRID_STAGE
    needs = ("lrm", "planes")
    gives = ("density", "color_fn", "bbox", "threshold", "grid_stats")

    def __init__(self, resolution: int = 256, chunk_size: int = GRID_CHUNK, method: str = "band") -> None:
        method = os.environ.get(GRID_METHOD_ENV) or method
        if method not in GRID_METHODS:
            raise InputError(f"unknown grid query method {method!r}",
                             fix=f"use one of {', '.join(GRID_METHODS)} (check {GRID_METHOD_ENV})")
        self.resolution, self.chunk_size, self.method = resolution, chunk_size, method

    def run(self, ctx: StageContext) -> None:
        model, planes = ctx.state.lrm, ctx.state.planes
        r = self.resolution

        def report(i: int, n: int) -> None:
            ctx.progress(GRID_STAGE, i, n, f"{r}^3 grid ({self.method}) chunk {i}/{n}")

        if self.method == "band":
            band = band_density_grid(model, planes, r, chunk_size=self.chunk_size, progress=report)
            density, threshold, evaluated = band.density, band.threshold, band.evaluated_fraction
        else:
            density = density_grid(model, planes, r, chunk_size=self.chunk_size, progress=report, method=self.method)
            threshold, evaluated = mesh_threshold(model.config, density), 1.0
        inside = float((density > threshold).mean())
        state = ctx.state
        state.density, state.color_fn = density, make_color_fn(model, planes, self.chunk_size)
        state.threshold, state.bbox = threshold, (model.config.bbox_min, model.config.bbox_max)
        state.grid_stats = {"resolution": r, "threshold": threshold, "inside_fraction": inside,
                                   "density_max": float(density.max()), "method": self.method,
                                   "evaluated_fraction": evaluated}
        if inside == 0.0:
            raise ModelError(f"the reconstruction is empty (no density above {threshold:g})",
                             fix="check the input image shows one clear object; try another image")
