"""``generate(request)``: the fast mode, image (or prompt) -> textured GLB in a job folder.

Stages: [text_to_image] -> preprocess -> lrm -> grid_query -> mesh -> export. Every stage
reports through one progress callback (which may cancel), the job folder keeps each
artefact and ``job.json`` (settings, seed, model, timings, stats), and the GLB is written
atomically: a failed or cancelled job leaves no GLB.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from orbitmesh import atomic
from orbitmesh.errors import InputError, ModelError
from orbitmesh.jobs import JobFolder
from orbitmesh.pipeline.orchestrator import Orchestrator, StageContext
from orbitmesh.pipeline.request import GenerateRequest, GenerateResult
from orbitmesh.progress import ProgressCallback, null_progress
from orbitmesh.settings import Settings, load_settings

GLB_NAME = "model.glb"


class MeshStage:
    """Density grid + colour function -> ``model.glb`` in the job folder (via orbitmesh.mesh.field_to_glb)."""

    name = "mesh"

    def __init__(self, target_faces: int, texture_size: int) -> None:
        self.target_faces, self.texture_size = target_faces, texture_size

    def run(self, ctx: StageContext) -> None:
        from orbitmesh.mesh import field_to_glb

        # field_to_glb writes atomically itself (and names the mesh after the file's stem).
        stats = field_to_glb(ctx.state["density"], ctx.state["color_fn"], bbox=ctx.state["bbox"],
                             threshold=ctx.state["threshold"], target_faces=self.target_faces,
                             texture_size=self.texture_size, out_path=ctx.job.artefact(GLB_NAME),
                             progress=ctx.progress, close_boundary=True)
        ctx.job.add_artefact(GLB_NAME)
        mesh = stats.to_dict() if hasattr(stats, "to_dict") else dict(vars(stats))
        mesh.pop("out_path", None)
        ctx.state["mesh_stats"] = mesh
        ctx.state.setdefault("warnings", []).extend(getattr(stats, "warnings", []))


class ExportStage:
    """Copy the job's GLB to ``request.output`` (atomically), when one was asked for."""

    name = "export"

    def __init__(self, output: str | None) -> None:
        self.output = output

    def run(self, ctx: StageContext) -> None:
        if not self.output:
            return
        ctx.progress(self.name, 0, 1, f"writing {self.output}")
        with atomic.atomic_path(Path(self.output).expanduser()) as tmp:
            shutil.copyfile(ctx.job.artefact(GLB_NAME), tmp)
        ctx.progress(self.name, 1, 1, f"wrote {self.output}")


def _check_output(output: str | None) -> None:
    if output is None:
        return
    path = Path(output).expanduser()
    if path.suffix.lower() != ".glb":
        raise InputError(f"output must be a .glb file, got {path.name!r}", fix="end the output path with .glb")
    if path.is_dir():
        raise InputError(f"output {path} is a folder", fix="give a file path ending in .glb")


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)


def _text_to_image_stage(request: GenerateRequest, settings: Settings):
    try:
        from orbitmesh.pipeline.text_to_image import stage_for_request
    except ImportError as exc:
        raise ModelError(f"prompt mode is unavailable: {exc}", fix="generate from an image instead") from exc
    return stage_for_request(request, settings)


def build_stages(request: GenerateRequest, settings: Settings, *, device: str, compute_dtype,
                 source) -> list:
    from orbitmesh.models import registry
    from orbitmesh.pipeline.preprocess import PreprocessConfig, PreprocessStage
    from orbitmesh.pipeline.reconstruct import GridQueryStage, LRMStage

    import torch

    def load(notify):
        # float32 weights; the encoder/transformer run under autocast on GPUs, the field stays float32.
        return registry.cached_lrm(source, model_dir=settings.model_dir, device=device, dtype=torch.float32,
                                   notify=notify)

    stages = [_text_to_image_stage(request, settings)] if request.prompt is not None else []
    stages += [PreprocessStage(PreprocessConfig()), LRMStage(load, device=device, compute_dtype=compute_dtype),
               GridQueryStage(request.mc_resolution), MeshStage(request.target_faces, request.texture_size),
               ExportStage(request.output)]
    return stages


def generate(request: GenerateRequest, *, settings: Settings | None = None,
             progress: ProgressCallback | None = None) -> GenerateResult:
    """Run one fast-mode job; returns the typed result (raises OrbitMeshError / JobCancelled).

    From a worker thread, call :func:`orbitmesh.native.preload_native_libraries` on the main
    thread first (Qt inside pymeshlab otherwise aborts the process at exit).
    """
    from orbitmesh.device import resolve_device, resolve_dtype
    from orbitmesh.models import registry

    request.validate()
    _check_output(request.output)
    settings = settings or load_settings()
    progress = progress or null_progress
    device = resolve_device(settings.device)
    compute_dtype = resolve_dtype(settings.dtype, device)
    source = registry.resolve_lrm_source(request.model, settings.model_dir)  # fails before any job folder
    if request.mode == "quality":  # orbit -> reconstruct -> align -> refine -> mesh -> project texture
        from orbitmesh.pipeline.quality import build_quality_stages

        stages = build_quality_stages(request, settings, device=device, compute_dtype=compute_dtype, source=source)
    else:
        stages = build_stages(request, settings, device=device, compute_dtype=compute_dtype, source=source)

    name = Path(request.image_path).stem if request.image_path else request.prompt.strip()
    job = JobFolder.create(settings.output_dir, name, settings={
        "request": request.to_dict(), "settings": settings.to_dict(), "device": device,
        "compute_dtype": str(compute_dtype).replace("torch.", ""), "model": source.name})
    job.update(model=source.name, seed=request.seed, mode=request.mode)
    _seed(request.seed)
    state, timings = Orchestrator(stages).run(job, progress, state={
        "image_path": request.image_path, "prompt": request.prompt, "seed": request.seed})

    stats = {"mesh": state.get("mesh_stats", {}), "grid": state.get("grid_stats", {})}
    warnings = list(dict.fromkeys(state.get("warnings", [])))
    job.update(stats=stats, warnings=warnings)
    return GenerateResult(job_dir=job.path, glb_path=job.artefact(GLB_NAME), request=request, model=source.name,
                          timings={f"{t.index:02d}-{t.name}": round(t.seconds, 4) for t in timings},
                          stats=stats, warnings=warnings)
