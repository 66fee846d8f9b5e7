"""The GPU suite: every speed figure a GPU machine should give, in one time-boxed run (``benchmarks/gpu_suite.py``).

Sections, in order (each with its own time box; the suite's budget is shared in that order):

* ``fast_vfusion3d``, ``fast_triposr``: fast mode, image -> GLB through the pipeline's own stages, full size with
  random weights (:mod:`orbitmesh.bench.reconstruction` builds them): a cold job, then warm jobs at 256^3 and
  512^3 with every stage's seconds, the encoder / transformer split of the ``lrm`` stage and peak GPU memory.
* ``sv3d_orbit``: the full-size SV3D pipeline (``benchmarks/sv3d_unet.py`` builds it, random weights): a
  21-frame orbit at 50 steps without and with model CPU offload (seconds per step, total, peak VRAM).
* ``quality``: quality mode end to end (VFusion3D + SV3D, both random, default settings).
* ``text_to_image``: the text-to-image stage's overhead on a tiny random pipeline
  (:mod:`orbitmesh.bench.text_to_image`).
* ``training``: steps per second of ``orbitmesh train configs/preview.toml`` per stage, on the GPU.

Random weights give a noise field; fast and quality jobs need an object. A forward hook low-passes the
triplanes the model computed (each channel resampled from 2x2 cells, its mean and spread kept) and, at the
first forward, shifts the decoder's density bias so that 10% of the box is inside
(:func:`orbitmesh.bench.reconstruction.calibrate_density`): a smooth random object of one or two parts for
both architectures, so the grid's narrow band and the mesh stage see a surface, not a sponge. The encoder,
transformer and decoder run at full size as in a real job.

``dry_run``: tiny configs of everything on the CPU (or the given device) in well under a minute, so the suite
itself is tested. Nothing imports pymeshlab (the GPU machine has none): the mesh stage decimates with
fast-simplification alone. Results: one JSON object (``run_suite``'s dict, written to ``out``) and a table.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from orbitmesh import atomic
from orbitmesh.errors import InputError, OrbitMeshError
from orbitmesh.pipeline.stages import StageEnv

DEFAULT_BUDGET_S = 540.0  # of a 10-minute device command: ~60 s left for installing wheels and imports
DEFAULT_OUT = "orbitmesh-output/gpu-suite.json"
DEFAULT_TRAIN_CONFIG = "configs/preview.toml"
SMOOTH_CELLS = 2  # random triplanes resampled from 2x2 cells per channel: one or two smooth parts
SEED = 42


class SectionTimeout(BaseException):
    """Raised by the alarm when a section runs past its time box (a BaseException: no stage's
    ``except Exception`` keeps it from stopping the section)."""


@dataclass(frozen=True)
class SectionSpec:
    """One section. ``budget_s``: its time box in a real run; ``min_s``: the least time worth starting it with."""

    name: str
    budget_s: float
    min_s: float
    what: str
    fn: Callable[["SectionRun"], None]


@dataclass
class SectionRun:
    """What a section function gets: settings, a clock, a shared cache and the result it fills in place
    (a failure keeps what was measured before it)."""

    name: str
    dry: bool
    device: str
    compute_dtype: Any
    work: Path
    deadline: float  # time.perf_counter() value
    later: frozenset[str]  # sections still to come (to keep models for them)
    cache: dict[str, Any]
    train_config: Path
    scripts_dir: Path | None
    result: dict[str, Any] = field(default_factory=dict)
    skipped_parts: list[dict[str, str]] = field(default_factory=list)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def need(self, seconds: float, part: str) -> bool:
        """True when ``seconds`` (an estimate) fit in the section's time left; else records the part as skipped."""
        left = self.left()
        if seconds <= left:
            return True
        self.skipped_parts.append({"part": part, "reason": f"needs ~{seconds:.0f} s, {max(left, 0):.0f} s left"})
        log(f"  {self.name}: skipping {part} (needs ~{seconds:.0f} s, {max(left, 0):.0f} s left)")
        return False

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- models with random weights ---------------------------------------------------------------------------------

def _on_device(run: SectionRun, build: Callable[[], Any]) -> tuple[Any, str]:
    """(build() with its tensors created on the run's GPU, where it was built): random init of a billion
    parameters is seconds on a GPU and a minute on a CPU. Falls back to building on the CPU."""
    import torch

    if run.device == "cuda":
        try:
            with torch.device("cuda"):
                return build(), "cuda"
        except Exception as exc:  # an init step that needs the CPU: build there instead
            log(f"  {run.name}: building on the GPU failed ({type(exc).__name__}: {exc}); building on the CPU")
            gc.collect()
    return build(), "cpu"


def smooth_planes(planes, cells: int = SMOOTH_CELLS):
    """(N, 3, C, H, W) triplanes -> the same shape and dtype, each channel resampled (bicubic) from ``cells`` x
    ``cells`` cell means and rescaled to its own mean and spread: a smooth field from any weights."""
    import torch.nn.functional as F

    n, p, c, h, w = planes.shape
    x = planes.reshape(n * p, c, h, w).float()
    s = F.interpolate(F.adaptive_avg_pool2d(x, cells), size=(h, w), mode="bicubic", align_corners=False)
    mean, std = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True)
    s_mean, s_std = s.mean((2, 3), keepdim=True), s.std((2, 3), keepdim=True).clamp_min(1e-6)
    return ((s - s_mean) / s_std * std + mean).reshape(n, p, c, h, w).to(planes.dtype)


def object_model(run: SectionRun, kind: str) -> Any:
    """A full-size (dry run: tiny) ``kind`` model with random weights on the run's device, its forward turned
    into a smooth random object (see the module docstring). ``model.bench_probe`` (a dict) holds
    ``forward_end`` (the perf_counter of the last forward's end, synchronised) and, after the first forward,
    ``density_shift``. Records build_s, built_on and the parameter counts in ``run.result``."""
    import torch

    from orbitmesh.bench.reconstruction import PARTS, PRESETS, _build, calibrate_density

    preset = PRESETS["tiny" if run.dry else "full"][kind]
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model, built_on = _on_device(run, lambda: _build(kind, preset))
    model = model.eval().to(run.device)
    run.sync()
    encoder, backbone = (getattr(model, part) for part in PARTS[kind])
    run.result.update(preset=preset, build_s=round(time.perf_counter() - t0, 3), built_on=built_on,
                      parameters=sum(p.numel() for p in model.parameters()),
                      parameters_encoder=sum(p.numel() for p in encoder.parameters()),
                      parameters_backbone=sum(p.numel() for p in backbone.parameters()))
    probe: dict[str, Any] = {}

    def hook(module, args, output):
        planes = smooth_planes(output)
        if "density_shift" not in probe:  # once, on the job's own input, outside the stage's autocast
            with torch.autocast(device_type=planes.device.type, enabled=False):
                probe["density_shift"] = calibrate_density(module, planes.float())
        run.sync()
        probe["forward_end"] = time.perf_counter()
        return planes

    model.register_forward_hook(hook)
    model.bench_probe = probe
    return model


def sv3d_pipeline(run: SectionRun) -> Any:
    """The SV3D pipeline with random weights on the run's device in its compute dtype: full size from
    ``benchmarks/sv3d_unet.py`` (UNet 1.5 B, CLIP ViT-H/14, image VAE); dry run: the tiny test modules."""
    import torch

    from orbitmesh.models.video.pipeline import SV3DPipeline

    dtype = run.compute_dtype if run.device != "cpu" else torch.float32
    t0 = time.perf_counter()
    build = benchmark_script("sv3d_unet", run.scripts_dir).build_full_pipeline  # looked up in a dry run too
    if run.dry:
        from orbitmesh.models.video.tiny import tiny_modules

        pipe, built_on = SV3DPipeline(*tiny_modules(seed=1)), "cpu"
    else:
        pipe, built_on = _on_device(run, lambda: build(dtype, with_encoders=True))
    pipe.dtype, pipe.device = dtype, run.device
    pipe.to(run.device, dtype)
    run.sync()
    run.result.update(build_s=round(time.perf_counter() - t0, 3), built_on=built_on, dtype=str(dtype).split(".")[-1],
                      unet_params_M=round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 1))
    return pipe


def restore_no_offload(pipe, run: SectionRun) -> None:
    """Undo ``SV3DPipeline.enable_low_memory``: models back on the device, feed-forwards unchunked."""
    pipe.offload = False
    for module in pipe.unet.modules():
        if hasattr(module, "set_chunk_feed_forward"):
            module.set_chunk_feed_forward(chunk_size=None)
    pipe.to(run.device, pipe.dtype)


def object_frames(pipe) -> None:
    """Random SV3D weights decode noise or a flat colour, and quality mode's masks, alignment and refinement need
    an object: ``pipe`` still decodes every frame (timed as usual), then returns the input view for each."""
    encode_image, decode = pipe.encode_image, pipe.decode
    seen: dict[str, Any] = {}

    def remember_input(image):  # (1, 3, H, W) in [-1, 1]: generate_orbit encodes the input first
        seen["input"] = image
        return encode_image(image)

    def decode_then_input(latents, chunk: int = 7, on_chunk=None):
        frames = decode(latents, chunk=chunk, on_chunk=on_chunk)  # (N, 3, H, W) in [-1, 1] on the CPU
        return seen["input"].float().cpu().expand_as(frames).clone()

    pipe.encode_image, pipe.decode = remember_input, decode_then_input


def benchmark_script(name: str, scripts_dir: Path | None = None):
    """The module ``benchmarks/<name>.py`` (``scripts_dir``, else beside this package's checkout, else the
    working directory's ``benchmarks/``)."""
    candidates = [Path(scripts_dir)] if scripts_dir else []
    candidates += [Path(__file__).resolve().parents[3] / "benchmarks", Path.cwd() / "benchmarks"]
    for folder in candidates:
        path = folder / f"{name}.py"
        if path.is_file():
            key = f"_orbitmesh_benchmarks_{name}"
            if key not in sys.modules:
                spec = importlib.util.spec_from_file_location(key, path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules[key] = module
            return sys.modules[key]
    raise InputError(f"benchmarks/{name}.py not found (looked in {', '.join(str(c) for c in candidates)})",
                     fix="run the suite from the repository root")


# -- jobs through the pipeline's own stages -----------------------------------------------------------------------

@dataclass
class _GivenModelEnv(StageEnv):
    """The stage environment of :func:`orbitmesh.pipeline.generate.generate` with an LRM already in memory."""

    model: Any = None

    def load_lrm(self, notify: Callable[[str], None] | None = None):
        return self.model


def example_image() -> str:
    """The bundled example photo (RGBA: the alpha is the cut-out, no background removal needed)."""
    from orbitmesh.models.registry import preview_model_dir

    return str(preview_model_dir() / "example.png")


def run_job(run: SectionRun, model, request, *, quality=None, orbit_pipeline=None,
            adjust: Callable[[list], None] | None = None) -> dict[str, Any]:
    """One job of ``request`` on ``model`` through the mode's stages (as ``generate`` builds them) in a job
    folder under the run's work folder -> {total_s, stages: {name: s}, encoder_s, transformer_s, grid, mesh,
    glb_bytes, peak_gpu_mb}. ``adjust(stages)`` may change the built stages (dry-run orbit size)."""
    import torch

    from orbitmesh.jobs import JobFolder
    from orbitmesh.pipeline.orchestrator import Orchestrator
    from orbitmesh.pipeline.output import GLB_NAME
    from orbitmesh.pipeline.stages import build_stages
    from orbitmesh.pipeline.state import PipelineState
    from orbitmesh.settings import Settings

    request.validate()
    settings = Settings(model_dir=run.work / "models", output_dir=run.work / "jobs", device=run.device)
    env = _GivenModelEnv(request, settings, run.device, run.compute_dtype, None, quality=quality,
                         orbit_pipeline=orbit_pipeline, model=model)
    stages = build_stages(env)
    if adjust is not None:
        adjust(stages)
    job = JobFolder.create(settings.output_dir, f"{run.name}-{request.mc_resolution}",
                           settings={"request": request.to_dict(), "suite_section": run.name})
    marks: dict[str, float] = {}

    def progress(stage: str, step: int, total: int, message: str = "") -> None:
        if stage == "lrm" and message == "starting":
            run.sync()
            marks["lrm_start"] = time.perf_counter()
        elif stage == "lrm" and message.startswith("encoder"):
            run.sync()
            marks["encoder_end"] = time.perf_counter()

    if run.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(request.seed)
    t0 = time.perf_counter()
    state, timings = Orchestrator(stages).run(job, progress, state=PipelineState(
        image_path=request.image_path, prompt=request.prompt, seed=request.seed))
    out: dict[str, Any] = {"total_s": round(time.perf_counter() - t0, 4),
                           "stages": {t.name: round(t.seconds, 4) for t in timings}}
    end = getattr(model, "bench_probe", {}).get("forward_end")
    if "lrm_start" in marks and "encoder_end" in marks and end is not None:
        out["encoder_s"] = round(marks["encoder_end"] - marks["lrm_start"], 4)
        out["transformer_s"] = round(end - marks["encoder_end"], 4)
    grid = state.grid_stats
    out["grid"] = {k: grid[k] for k in ("resolution", "evaluated_fraction", "inside_fraction") if k in grid}
    mesh = state.mesh_stats
    out["mesh"] = {"faces": mesh.get("faces"), "steps": mesh.get("timings", {})}
    out["glb_bytes"] = job.artefact(GLB_NAME).stat().st_size
    if run.device == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


# -- sections -----------------------------------------------------------------------------------------------------

def _fast(run: SectionRun, kind: str) -> None:
    from orbitmesh.pipeline.request import GenerateRequest

    model = object_model(run, kind)
    resolutions = (32, 48) if run.dry else (256, 512)
    sizes = {"target_faces": 500, "texture_size": 64} if run.dry else {}  # else the defaults (20000, 1024)

    def request(r: int):
        return GenerateRequest(image_path=example_image(), model=kind, mc_resolution=r, seed=SEED, **sizes)

    cold = run_job(run, model, request(resolutions[0]))  # loads kernels, calibrates the density
    run.result.update(cold_s=cold["total_s"], density_shift=model.bench_probe.get("density_shift"),
                      threshold=model.config.mesh_threshold, runs={})
    estimate = 2.0 * cold["total_s"]
    for r in resolutions:
        if not run.need(estimate, f"the warm {r}^3 job"):
            continue
        res = run_job(run, model, request(r))
        run.result["runs"][str(r)] = res
        estimate = 3.0 * res["total_s"]  # 512^3: ~8x the grid points, a band that grows ~4x
    if kind == "vfusion3d" and "quality" in run.later:
        run.cache["vfusion3d"] = model.to("cpu")  # off the GPU: the SV3D peak memory is SV3D's alone


def fast_vfusion3d(run: SectionRun) -> None:
    _fast(run, "vfusion3d")


def fast_triposr(run: SectionRun) -> None:
    _fast(run, "triposr")


def sv3d_orbit(run: SectionRun) -> None:
    from PIL import Image

    from orbitmesh.pipeline.orbit import OrbitConfig, generate_orbit

    frames, size, steps = (2, 64, 2) if run.dry else (21, 576, 50)
    pipe = sv3d_pipeline(run)
    run.result.update(frames=frames, size=size, steps=steps)
    cfg = OrbitConfig(steps=steps, num_frames=frames, size=size)
    image = Image.new("RGB", (size, size), "white")
    t0 = time.perf_counter()
    generate_orbit(pipe, image, replace(cfg, steps=1))  # kernels, cuDNN plans, lazy init: not in the timed orbits
    run.result["warmup_s"] = round(time.perf_counter() - t0, 3)
    estimate = 0.0
    for offload in (False, True):
        tag = "offload" if offload else "no_offload"
        if estimate and not run.need(estimate, f"the orbit with {tag.replace('_', ' ')}"):
            continue
        if offload:
            pipe.enable_low_memory()  # models on the CPU, each on the GPU while it runs; chunked feed-forwards
            pipe.to(run.device, pipe.dtype)
        _empty_cache(run)
        t0 = time.perf_counter()
        out = generate_orbit(pipe, image, cfg)
        total = time.perf_counter() - t0
        run.result[tag] = {"total_s": round(total, 3), "s_per_step": round(out.timings["sample"] / steps, 4),
                           **{f"{k}_s": round(v, 3) for k, v in out.timings.items()},
                           "peak_vram_gb": None if out.peak_vram_bytes is None else
                           round(out.peak_vram_bytes / 2**30, 2)}
        estimate = 1.6 * total  # offload moves the UNet per orbit and runs the two guidance branches in turn
    if "quality" in run.later:
        restore_no_offload(pipe, run)
        run.cache["sv3d"] = pipe


def quality(run: SectionRun) -> None:
    from orbitmesh.pipeline.quality import QualityConfig
    from orbitmesh.pipeline.request import GenerateRequest

    model = run.cache.pop("vfusion3d", None)
    if model is None:
        model = object_model(run, "vfusion3d")
    model.to(run.device)
    pipe = run.cache.pop("sv3d", None)
    if pipe is None:
        pipe = sv3d_pipeline(run)
    config, adjust = None, None
    sizes: dict[str, int] = {}
    if run.dry:
        from orbitmesh.quality.align import AlignConfig
        from orbitmesh.quality.refine import RefineConfig

        align = AlignConfig(size=32, max_faces=500, coarse_range_deg=10.0, coarse_step_deg=10.0, try_reverse=False,
                            fit_elevation=False, fit_fov=False, fit_radius=False, max_evaluations=4)
        config = QualityConfig(align=align, align_grid=32, render_size=16,
                               refine=RefineConfig(steps=2, rays_per_step=128, samples=8, image_size=16))
        sizes = {"mc_resolution": 32, "target_faces": 500, "texture_size": 64, "orbit_steps": 2}

        def adjust(stages: list) -> None:  # 6 orbit frames of 64 px instead of 21 of 576
            for stage in stages:
                if stage.name == "orbit":
                    stage.config = replace(stage.config, size=64, num_frames=6)

    object_frames(pipe)
    request = GenerateRequest(image_path=example_image(), model="vfusion3d", mode="quality", seed=SEED, **sizes)
    res = run_job(run, model, request, quality=config, orbit_pipeline=pipe, adjust=adjust)
    run.result.update(res, orbit_steps=request.orbit_steps, mc_resolution=request.mc_resolution,
                      density_shift=model.bench_probe.get("density_shift"))


def text_to_image(run: SectionRun) -> None:
    from orbitmesh.bench import text_to_image as bench
    from orbitmesh.bench.tiny_text_to_image import build_tiny_pipeline

    folder = run.work / "text-to-image" / "tiny-sd-turbo"  # a distilled name: sd-turbo's 4 steps, no guidance
    t0 = time.perf_counter()
    build_tiny_pipeline(folder)
    run.result["build_s"] = round(time.perf_counter() - t0, 3)
    res = bench.run(model=str(folder), device=run.device, steps=2 if run.dry else 4)
    run.result.update({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()})
    run.result["pipeline"] = "tiny random (UNet 32/64 channels, 2-layer CLIP text encoder): overhead, not a model"


def training(run: SectionRun) -> None:
    import torch

    from orbitmesh.training import Trainer, load_config

    cfg = load_config(run.train_config)
    cfg.train.device = run.device
    cfg.output.dir, cfg.output.export = str(run.work / "train"), None
    cfg.data.cache_dir = str(run.work / "train-cache")
    # the initial pool renders in parallel (spawned workers: seconds to start, so not for the dry run's 4 objects)
    cfg.data.workers = 1 if run.dry else max(1, min(8, os.cpu_count() or 1))
    cfg.data.validation_count = 0
    if run.dry:  # the preview model itself, on little data and small batches
        cfg.data.count, cfg.data.max_objects, cfg.data.grow_per_step = 4, 8, 1
        cfg.data.views, cfg.data.view_size, cfg.data.points = 2, 32, 512
        cfg.train.rays_per_sample, cfg.train.points_per_sample, cfg.train.views_per_sample = 32, 256, 2
        cfg.stages = [replace(s, batch_size=2, render_size=16, samples_per_ray=8) for s in cfg.stages]
    threads = torch.get_num_threads()
    try:
        _train_steps(run, cfg, Trainer)
    finally:
        torch.set_num_threads(threads)  # the config's train.threads holds for this section alone


def _train_steps(run: SectionRun, cfg, trainer_class) -> None:
    import torch

    t0 = time.perf_counter()
    trainer = trainer_class(cfg, device=run.device, log=lambda message: None)
    run.result["build_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    trainer.load_data()
    run.result.update(data_s=round(time.perf_counter() - t0, 3), objects=trainer.pool_size,
                      config=str(run.train_config), parameters=sum(p.numel() for p in trainer.model.parameters()),
                      stages={})
    grow = [0.0]
    add_objects = trainer._add_objects

    def timed_add_objects(first_seed: int, n: int) -> None:  # the pool's growth: procedural renders on the CPU
        t = time.perf_counter()
        add_objects(first_seed, n)
        grow[0] += time.perf_counter() - t

    trainer._add_objects = timed_add_objects
    warmup, most, least = (1, 2, 1.0) if run.dry else (3, 40, 5.0)
    estimate_minutes = 0.0
    if run.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i, stage in enumerate(cfg.stages):
        share = run.left() / (len(cfg.stages) - i) - 1.0  # the time left, shared by the stages still to time
        if not run.need(least + 1.0, f"stage {i + 1}"):
            continue
        for _ in range(warmup):
            trainer.train_step(stage, cfg.train.lr)
        grow[0], steps, t0 = 0.0, 0, time.perf_counter()
        while steps < most and (steps < 1 or time.perf_counter() - t0 < share):
            trainer.train_step(stage, cfg.train.lr)  # returns floats: the GPU has finished the step
            steps += 1
        seconds = (time.perf_counter() - t0) / steps
        run.result["stages"][str(i + 1)] = {
            "steps": stage.steps, "batch_size": stage.batch_size or cfg.train.batch_size,
            "render_size": stage.render_size,
            "rays_per_sample": cfg.train.rays_per_sample if stage.rays_per_sample is None else stage.rays_per_sample,
            "steps_timed": steps, "s_per_step": round(seconds, 4), "steps_per_s": round(1.0 / seconds, 3),
            "grow_s_per_step": round(grow[0] / steps, 4)}
        estimate_minutes += stage.steps * seconds / 60
    if len(run.result["stages"]) == len(cfg.stages):
        run.result["full_run_minutes_estimate"] = round(estimate_minutes, 2)
    if run.device == "cuda":
        run.result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("fast_vfusion3d", 75, 20, "VFusion3D fast mode image -> GLB, warm, 256^3 and 512^3", fast_vfusion3d),
    SectionSpec("fast_triposr", 75, 20, "TripoSR fast mode image -> GLB, warm, 256^3 and 512^3", fast_triposr),
    SectionSpec("sv3d_orbit", 200, 60, "SV3D 21-frame orbit, 50 steps, without and with offload", sv3d_orbit),
    SectionSpec("quality", 120, 45, "quality mode end to end (VFusion3D + SV3D)", quality),
    SectionSpec("text_to_image", 30, 8, "text-to-image stage overhead (tiny random pipeline)", text_to_image),
    SectionSpec("training", 60, 15, "preview-model training steps per second (configs/preview.toml)", training),
)
SECTION_NAMES = tuple(s.name for s in SECTIONS)


# -- the suite ----------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _time_box(seconds: float):
    """Raise SectionTimeout in this (main) thread after ``seconds``; elsewhere only the soft checks hold."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum, frame):
        raise SectionTimeout()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _empty_cache(run: SectionRun) -> None:
    gc.collect()
    if run.device == "cuda":
        import torch

        torch.cuda.empty_cache()


def environment(device: str) -> dict[str, Any]:
    """The machine and the library versions the numbers belong to."""
    from importlib import metadata

    import torch

    import orbitmesh

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpus": os.cpu_count(), "orbitmesh": orbitmesh.__version__, "torch": torch.__version__}
    for dist in ("transformers", "diffusers", "numpy", "xatlas", "fast-simplification", "huggingface-hub"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, gpu_capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    return env


def run_suite(*, dry_run: bool = False, budget_s: float = DEFAULT_BUDGET_S, sections: Sequence[str] | None = None,
              device: str = "auto", train_config: str | Path = DEFAULT_TRAIN_CONFIG, out: str | Path | None = None,
              work_dir: str | Path | None = None, scripts_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the sections (all, or the names in ``sections``, in the suite's order) within ``budget_s`` seconds
    -> the suite's dict; written to ``out`` (JSON) after every section, so a killed run leaves what it had.

    A section starts only with its ``min_s`` left (else: skipped, with the reason) and runs in a time box of
    its ``budget_s`` or what is left (in a dry run: what is left); one that fails or runs past its box is
    reported as failed and the next one runs. ``work_dir``: job folders and caches (default: a temporary
    folder, removed at the end).
    """
    chosen = list(sections) if sections else list(SECTION_NAMES)
    unknown = [s for s in chosen if s not in SECTION_NAMES]
    if unknown:
        raise InputError(f"unknown section(s) {', '.join(unknown)}", fix=f"choose from {', '.join(SECTION_NAMES)}")
    if not budget_s > 0:
        raise InputError(f"the budget must be positive, got {budget_s}", fix="e.g. --budget-s 540")
    start = time.perf_counter()
    deadline = start + budget_s
    import torch

    from orbitmesh.device import resolve_device, resolve_dtype

    device = resolve_device(device)
    compute_dtype = resolve_dtype("auto", device)
    train_config = _find(train_config)
    result: dict[str, Any] = {
        "suite": "gpu", "dry_run": dry_run, "budget_s": budget_s, "device": device,
        "compute_dtype": str(compute_dtype).replace("torch.", ""), "environment": _plain(environment(device)),
        "sections": {}}
    specs = [s for s in SECTIONS if s.name in chosen]
    temp = None if work_dir else tempfile.TemporaryDirectory(prefix="orbitmesh-gpu-suite-")
    work = Path(work_dir or temp.name)
    cache: dict[str, Any] = {}
    try:
        for i, spec in enumerate(specs):
            left = deadline - time.perf_counter()
            box = left if dry_run else min(spec.budget_s, left)
            entry: dict[str, Any] = {"status": "skipped", "what": spec.what, "budget_s": round(max(box, 0.0), 1),
                                     "seconds": 0.0}
            minimum = 1.0 if dry_run else spec.min_s
            if left < minimum:
                entry["reason"] = (f"needs at least {minimum:.0f} s, {max(left, 0):.0f} s of the suite's "
                                   f"{budget_s:.0f} s budget left")
                log(f"{spec.name}: skipped ({entry['reason']})")
            else:
                log(f"{spec.name}: {spec.what} (time box {box:.0f} s)")
                run = SectionRun(name=spec.name, dry=dry_run, device=device, compute_dtype=compute_dtype,
                                 work=work / spec.name, deadline=time.perf_counter() + box,
                                 later=frozenset(s.name for s in specs[i + 1:]), cache=cache,
                                 train_config=train_config, scripts_dir=Path(scripts_dir) if scripts_dir else None)
                run.work.mkdir(parents=True, exist_ok=True)
                entry.update(_run_section(spec, run, box))
                log(f"{spec.name}: {entry['status']} in {entry['seconds']:.1f} s")
            result["sections"][spec.name] = entry
            result["seconds"] = round(time.perf_counter() - start, 2)
            if out:
                _write(out, result)
    finally:
        cache.clear()
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        if temp is not None:
            temp.cleanup()
    loaded = sys.modules.get("pymeshlab")
    result["pymeshlab_loaded"] = loaded is not None
    result["seconds"] = round(time.perf_counter() - start, 2)
    if out:
        result["out"] = str(out)
        _write(out, result)
    return result


def _run_section(spec: SectionSpec, run: SectionRun, box: float) -> dict[str, Any]:
    """Run one section in its time box -> {status, seconds, [error], [skipped_parts], **its results}."""
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"status": "done"}
    try:
        with _time_box(box):
            spec.fn(run)
    except SectionTimeout:
        entry.update(status="failed", error={"error": "SectionTimeout",
                                             "message": f"stopped at the end of its {box:.0f} s time box"})
    except OrbitMeshError as exc:
        entry.update(status="failed", error=exc.to_dict())
    except Exception as exc:  # any failure is reported; the suite goes on
        entry.update(status="failed", error={"error": type(exc).__name__, "message": str(exc),
                                             "traceback": traceback.format_exc(limit=-6)})
    if entry["status"] == "failed":
        log(f"  {spec.name} failed: {entry['error']['message']}")
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    if run.skipped_parts:
        entry["skipped_parts"] = run.skipped_parts
    entry.update(_plain(run.result))
    if run.device == "cuda":  # a failed section may have left its tensors in the exception's frames
        import torch

        gc.collect()
        torch.cuda.empty_cache()
    return entry


def _plain(value: Any) -> Any:
    """JSON-ready: numpy and torch scalars as Python numbers, containers walked, anything else as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            return item()
    return str(value)


def _find(path: str | Path) -> Path:
    """A relative path from the working directory, else from this package's checkout."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    beside = Path(__file__).resolve().parents[3] / p
    return beside if beside.exists() else p


def _write(path: str | Path, result: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, result)


# -- the table ----------------------------------------------------------------------------------------------------

def _s(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _headline(name: str, entry: dict) -> str:
    """One line of what a section measured."""
    if entry["status"] == "skipped":
        return entry.get("reason", "")
    if entry["status"] == "failed" and not any(k in entry for k in ("runs", "no_offload", "total_s", "stages")):
        return entry["error"]["message"][:100]
    if name.startswith("fast_"):
        runs = ", ".join(f"{r}^3 GLB {_s(v['total_s'])} s" for r, v in entry.get("runs", {}).items())
        return f"{runs} (cold {_s(entry.get('cold_s'))} s)"
    if name == "sv3d_orbit":
        parts = [f"{tag.replace('_', ' ')}: {_s(v['s_per_step'])} s/step, {_s(v['total_s'])} s, "
                 f"{_s(v['peak_vram_gb'])} GB" for tag in ("no_offload", "offload") if (v := entry.get(tag))]
        return "; ".join(parts)
    if name == "quality":
        return f"GLB {_s(entry.get('total_s'))} s, orbit {_s(entry.get('stages', {}).get('orbit'))} s"
    if name == "text_to_image":
        return (f"{_s(entry.get('total_s'))} s for {entry.get('steps')} steps at {entry.get('size')}, "
                f"{_s(entry.get('step_s (median of later steps)'))} s/step")
    if name == "training":
        rates = ", ".join(f"stage {k}: {_s(v['steps_per_s'])} steps/s" for k, v in entry.get("stages", {}).items())
        full = entry.get("full_run_minutes_estimate")
        return rates + (f"; full run ~{full:.1f} min" if full is not None else "")
    return ""


def format_table(result: dict) -> str:
    env = result["environment"]
    where = env.get("gpu") or f"{result['device']} ({env.get('cpus')} CPUs)"
    lines = [f"OrbitMesh GPU suite on {where}, {result['compute_dtype']}"
             + (" (dry run: tiny configs)" if result["dry_run"] else "")
             + f": {_s(result.get('seconds'))} s of a {result['budget_s']:.0f} s budget", ""]
    sections = result["sections"]
    width = max([len(n) for n in sections] + [7])
    lines.append(f"{'section':<{width}}  {'status':<7}  {'seconds':>7}  what it measured")
    for name, entry in sections.items():
        lines.append(f"{name:<{width}}  {entry['status']:<7}  {entry['seconds']:>7.1f}  {_headline(name, entry)}")
    fast = {n: e for n, e in sections.items() if n.startswith("fast_") and e.get("runs")}
    if fast:
        cols = [(n, r) for n, e in fast.items() for r in e["runs"]]
        header = ["fast mode, warm (s)", *(f"{n.removeprefix('fast_')} {r}^3" for n, r in cols)]
        table = []
        for stage in dict.fromkeys(s for n, r in cols for s in fast[n]["runs"][r]["stages"]):
            table.append([stage, *(_s(fast[n]["runs"][r]["stages"].get(stage)) for n, r in cols)])
            if stage == "lrm":  # its two halves
                table += [[f"  {part}", *(_s(fast[n]["runs"][r].get(f"{part}_s")) for n, r in cols)]
                          for part in ("encoder", "transformer")]
        table.append(["total", *(_s(fast[n]["runs"][r]["total_s"]) for n, r in cols)])
        table.append(["peak GPU MB", *(_s(fast[n]["runs"][r].get("peak_gpu_mb")) for n, r in cols)])
        widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
        lines += ["", *("  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))])
                        for row in [header, *table])]
    lines += ["", f"pymeshlab loaded: {'yes' if result.get('pymeshlab_loaded') else 'no'}"]
    if result.get("out"):
        lines.append(f"JSON: {result['out']}")
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_suite.py", description=(
        "Every GPU speed figure in one time-boxed run (random weights at full size): fast mode per model and "
        "stage, SV3D orbit, quality mode, text-to-image overhead, preview training steps/s."))
    parser.add_argument("--dry-run", action="store_true", help="tiny configs (seconds on a CPU): test the suite")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for all sections together (default {DEFAULT_BUDGET_S:.0f})")
    parser.add_argument("--sections", nargs="+", choices=SECTION_NAMES, metavar="NAME",
                        help=f"run only these ({', '.join(SECTION_NAMES)})")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu (default auto)")
    parser.add_argument("--train-config", default=DEFAULT_TRAIN_CONFIG,
                        help=f"training config of the training section (default {DEFAULT_TRAIN_CONFIG})")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result file (default {DEFAULT_OUT})")
    parser.add_argument("--work-dir", help="keep job folders and caches here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line after the table")
    return parser


def main(argv: Sequence[str] | None = None, *, scripts_dir: str | Path | None = None) -> int:
    """The command: prints the table (and with --json the JSON object on the last line); 0 when no section
    failed, 1 otherwise, 2 for bad arguments."""
    args = build_parser().parse_args(argv)
    try:
        result = run_suite(dry_run=args.dry_run, budget_s=args.budget_s, sections=args.sections, device=args.device,
                           train_config=args.train_config, out=args.out, work_dir=args.work_dir,
                           scripts_dir=scripts_dir)
    except OrbitMeshError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"fix: {exc.fix}", file=sys.stderr)
        return 2
    print(format_table(result), flush=True)
    if args.json:
        print(json.dumps(result), flush=True)
    return 1 if any(e["status"] == "failed" for e in result["sections"].values()) else 0
