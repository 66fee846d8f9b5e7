"""``generate(request)``: image (or prompt) -> textured GLB in a job folder, in any mode.

The stages come from the mode table (:mod:`orbitmesh.pipeline.modes`, built by
:mod:`orbitmesh.pipeline.stages`): fast is [text_to_image] -> preprocess -> lrm -> grid_query ->
mesh -> export; quality adds orbit, align and refine. Every stage reports through one progress
callback (which may cancel), the job folder keeps each artefact and ``job.json`` (settings, seed,
model, the licences of the models used, timings, stats), and the GLB is written atomically: a failed
or cancelled job leaves no GLB. ``Settings.commercial_only`` and the output path are checked before the job
folder exists (:mod:`orbitmesh.pipeline.licences`, :func:`check_output`). Once the folder exists, every way
out ends its ``job.json`` in a terminal state: a KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one by the
CLI) marks it cancelled, and a failed copy to ``request.output`` is a clear error that says where the
finished GLB is.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
import traceback
from pathlib import Path

from orbitmesh.errors import InputError, OrbitMeshError
from orbitmesh.jobs import TERMINAL, JobFolder
from orbitmesh.pipeline import modes
from orbitmesh.pipeline.licences import job_licences
from orbitmesh.pipeline.orchestrator import Orchestrator, check_plan
from orbitmesh.pipeline.output import GLB_NAME
from orbitmesh.pipeline.request import GenerateRequest, GenerateResult
from orbitmesh.pipeline.state import PipelineState
from orbitmesh.progress import ProgressCallback, null_progress
from orbitmesh.settings import Settings, load_settings


def check_output(output: str | os.PathLike | None) -> None:
    """Refuse an output path that could not be written, before any heavy work (raises InputError).

    The path must end in .glb and not be a folder or another non-file; its folder, or the nearest existing
    folder above it (missing ones are created at export), must let us create files. That is probed with a
    temp file that is removed at once: ``os.access`` alone says yes to root on read-only places (/proc).
    """
    if output is None:
        return
    path = Path(output).expanduser()
    fix = "choose an output path in a folder you can write to, or leave it out (the GLB stays in the job folder)"
    if path.suffix.lower() != ".glb":
        raise InputError(f"output must be a .glb file, got {path.name!r}", fix="end the output path with .glb")
    if path.is_dir():
        raise InputError(f"output {path} is a folder", fix="give a file path ending in .glb")
    if os.path.lexists(path) and not (path.is_file() or path.is_symlink()):
        raise InputError(f"output {path} exists and is not a regular file", fix=fix)
    folder = path.parent
    while True:  # the nearest existing folder: the export creates the missing ones below it
        try:
            os.stat(folder)
            break
        except (FileNotFoundError, NotADirectoryError):
            folder = folder.parent
        except OSError as exc:
            raise InputError(f"cannot write {path}: {folder}: {exc.strerror or exc}", fix=fix) from None
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: {folder} is a file, not a folder", fix=fix)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: the folder {folder} is not writable", fix=fix)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write {path}: cannot create files in {folder} ({exc.strerror or exc})",
                         fix=fix) from None


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
    check_output(request.output)
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
    try:
        job.update(model=source.name, seed=request.seed, mode=request.mode, licences=licences.licences)

        # 4. Run the stages.
        _seed(request.seed)
        state, timings = Orchestrator(stages).run(job, progress, state=initial)

        # 5. Record and return the result.
        stats = {"mesh": state.mesh_stats, "grid": state.grid_stats}
        warnings = list(dict.fromkeys(licences.warnings + state.warnings))
        job.update(stats=stats, warnings=warnings)
    except BaseException as exc:  # KeyboardInterrupt included: the job folder must not stay "running"
        clear = _write_error(job, request.output, exc) if isinstance(exc, OSError) else None
        _end_unfinished(job, exc)
        if clear is not None:
            raise clear from exc
        raise
    return GenerateResult(job_dir=job.path, glb_path=job.artefact(GLB_NAME), request=request, model=source.name,
                          timings={f"{t.index:02d}-{t.name}": round(t.seconds, 4) for t in timings},
                          stats=stats, warnings=warnings, licences=licences.licences)


def _write_error(job: JobFolder, output: str | None, exc: OSError) -> OrbitMeshError | None:
    """A clear error for a failed write the orchestrator recorded with a traceback: any OSError of the export
    (the copy to ``output``), or a full disk in any stage; records it in ``job.json`` (the job stays failed).
    The message says where the GLB is when it is complete in the job folder. None for any other error."""
    recorded = job.record.get("error") or {}
    stage = recorded.get("stage")
    if stage != modes.EXPORT and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    reason = exc.strerror or str(exc)
    glb = job.artefact(GLB_NAME)
    complete = GLB_NAME in job.record.get("artefacts", ()) and glb.is_file()  # written atomically, then listed
    if stage == modes.EXPORT and complete:
        error = OrbitMeshError(f"could not write {output}: {reason}; the finished GLB is in the job folder: {glb}",
                               fix="copy it from there, or free space / choose a writable output path and run again")
    else:
        error = OrbitMeshError(f"could not write {exc.filename or output}: {reason}",
                               fix="free disk space or choose another output folder, then run again")
    try:
        job.update(status="failed", finished=time.time(),
                   error={"stage": stage, **error.to_dict(), "glb_path": str(glb) if complete else None})
    except OSError:  # the disk is full: job.json keeps the orchestrator's record
        pass
    return error


def _end_unfinished(job: JobFolder, exc: BaseException) -> None:
    """End a job the orchestrator left unfinished (a KeyboardInterrupt mid-stage, an error before the first
    stage): cancelled for an interrupt, failed otherwise. A terminal job keeps its record, saved once more (an
    interrupt may have cut the orchestrator's own atomic save short)."""
    values: dict = {}
    stage = job.record.get("stage") or None
    stage = stage.split("-", 1)[-1] if stage else None  # "03-grid_query" -> "grid_query", as the orchestrator
    if job.record.get("status") in TERMINAL:
        pass
    elif isinstance(exc, KeyboardInterrupt):
        values = {"status": "cancelled", "finished": time.time(),
                  "error": {"stage": stage, "message": str(exc) or "interrupted (Ctrl-C)"}}
    else:
        values = {"status": "failed", "finished": time.time(), "error": {
            "stage": stage, "error": type(exc).__name__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc, limit=20))}}
    try:
        job.update(**values)
    except OSError:  # e.g. the disk is full; nothing more can be recorded
        pass
