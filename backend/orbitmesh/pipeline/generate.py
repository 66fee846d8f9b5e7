"""``generate(request)``: image (or prompt) -> textured GLB in a job folder, in any mode.

The stages come from the mode table (:mod:`orbitmesh.pipeline.modes`, built by
:mod:`orbitmesh.pipeline.stages`): fast is [text_to_image] -> preprocess -> lrm -> grid_query ->
mesh -> export; quality adds orbit, align and refine. Every stage reports through one progress
callback (which may cancel), the job folder keeps each artefact and ``job.json`` (settings, seed,
model, the licences of the models used, timings, stats), and the GLB is written atomically: a failed
or cancelled job leaves no GLB. ``Settings.commercial_only`` is checked before the job folder exists
(:mod:`orbitmesh.pipeline.licences`).
"""

from __future__ import annotations

from pathlib import Path

from orbitmesh.errors import InputError
from orbitmesh.jobs import JobFolder
from orbitmesh.pipeline.licences import job_licences
from orbitmesh.pipeline.orchestrator import Orchestrator, check_plan
from orbitmesh.pipeline.output import GLB_NAME
from orbitmesh.pipeline.request import GenerateRequest, GenerateResult
from orbitmesh.pipeline.state import PipelineState
from orbitmesh.progress import ProgressCallback, null_progress
from orbitmesh.settings import Settings, load_settings


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


def generate(request: GenerateRequest, *, settings: Settings | None = None,
             progress: ProgressCallback | None = None, quality=None, orbit_pipeline=None) -> GenerateResult:
    """Run one job; returns the typed result (raises OrbitMeshError / JobCancelled).

    ``quality`` (a :class:`orbitmesh.pipeline.quality.QualityConfig`) and ``orbit_pipeline`` (a loaded
    SV3D pipeline) tune quality mode. From a worker thread, call
    :func:`orbitmesh.native.preload_native_libraries` on the main thread first (Qt inside pymeshlab
    otherwise aborts the process at exit).
    """
    from orbitmesh.device import resolve_device, resolve_dtype
    from orbitmesh.models import registry
    from orbitmesh.pipeline.stages import StageEnv, build_stages

    # 1. Check the request and resolve everything that can fail before a job folder exists.
    request.validate()
    _check_output(request.output)
    settings = settings or load_settings()
    progress = progress or null_progress
    device = resolve_device(settings.device)
    compute_dtype = resolve_dtype(settings.dtype, device)
    source = registry.resolve_lrm_source(request.model, settings.model_dir, commercial_only=settings.commercial_only,
                                         default=settings.default_model)
    licences = job_licences(request, settings, source)  # commercial_only: refuses before anything loads
    if request.mode == "quality" and orbit_pipeline is None:
        from orbitmesh.models.catalogue import require_available
        from orbitmesh.pipeline.orbit import OrbitConfig

        require_available(OrbitConfig().model, settings.model_dir, needed_for="quality mode",
                          otherwise="use mode 'fast'")

    # 2. The stages of the request's mode, checked against what each needs.
    env = StageEnv(request, settings, device, compute_dtype, source, quality=quality, orbit_pipeline=orbit_pipeline)
    stages = build_stages(env)
    initial = PipelineState(image_path=request.image_path, prompt=request.prompt, seed=request.seed)
    check_plan(stages, initial.given())

    # 3. The job folder, recording the request, the settings and the model.
    name = Path(request.image_path).stem if request.image_path else request.prompt.strip()
    job = JobFolder.create(settings.output_dir, name, settings={
        "request": request.to_dict(), "settings": settings.to_dict(), "device": device,
        "compute_dtype": str(compute_dtype).replace("torch.", ""), "model": source.name})
    job.update(model=source.name, seed=request.seed, mode=request.mode, licences=licences.licences)

    # 4. Run the stages.
    _seed(request.seed)
    state, timings = Orchestrator(stages).run(job, progress, state=initial)

    # 5. Record and return the result.
    stats = {"mesh": state.mesh_stats, "grid": state.grid_stats}
    warnings = list(dict.fromkeys(licences.warnings + state.warnings))
    job.update(stats=stats, warnings=warnings)
    return GenerateResult(job_dir=job.path, glb_path=job.artefact(GLB_NAME), request=request, model=source.name,
                          timings={f"{t.index:02d}-{t.name}": round(t.seconds, 4) for t in timings},
                          stats=stats, warnings=warnings, licences=licences.licences)
