"""Text-to-image stage: load time, seconds per denoising step, total, peak and left-over GPU memory.

Runs ``TextToImageStage`` on a model that is already on this machine (never downloads), in a
temporary job folder, exactly as a prompt job does. ``left_after_release_mb`` is the GPU memory
still allocated after the stage released its pipeline (what the 3D models can not use).
"""

from __future__ import annotations

import platform
import tempfile
import time


def run(*, model: str | None = None, model_dir: str | None = None, steps: int | None = None,
        size: int | None = None, candidates: int = 1, device: str = "auto", dtype: str = "auto",
        offload: bool = False, prompt: str = "a wooden chair") -> dict:
    """Time the text-to-image stage on ``model`` (hub id in the cache/model folder, or a folder; default: the
    default text-to-image model), looking hub ids up in ``model_dir``; ``steps`` denoising steps (default: the
    model family's) at ``size`` x ``size`` (default: the model's native size); ``offload``: model CPU offload
    (needs accelerate).
    """
    import torch

    from orbitmesh.device import resolve_device
    from orbitmesh.jobs import JobFolder
    from orbitmesh.pipeline.orchestrator import StageContext
    from orbitmesh.pipeline.text_to_image import TextToImageConfig, TextToImageStage

    resolved = resolve_device(device)
    config = TextToImageConfig(**({"model": model} if model else {}), steps=steps, width=size, height=size,
                               num_candidates=candidates, local_files_only=True, device=device, dtype=dtype,
                               offload=offload, model_dir=model_dir)
    marks: list[tuple[int, float]] = []

    def progress(stage: str, step: int, total: int, message: str = "") -> None:
        if step > 0:
            marks.append((step, time.perf_counter()))

    cuda = resolved == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="orbitmesh-bench-") as tmp:
        job = JobFolder.create(tmp, "bench")
        ctx = StageContext(job=job, progress=progress, state={"prompt": prompt, "seed": 0})
        t0 = time.perf_counter()
        TextToImageStage(config).run(ctx)
        total = time.perf_counter() - t0
        record = job.record["text_to_image"]
    step_times = [b - a for (_, a), (_, b) in zip(marks, marks[1:], strict=False)]
    result = {
        "model": config.model, "device": resolved,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "size": f"{record['width']}x{record['height']}", "steps": record["steps"], "candidates": candidates,
        "guidance_scale": record["guidance_scale"],
        "load_s (import + weights + first step)": marks[0][1] - t0 if marks else float("nan"),
        "step_s (median of later steps)": sorted(step_times)[len(step_times) // 2] if step_times else float("nan"),
        "total_s": total,
    }
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["left_after_release_mb"] = torch.cuda.memory_allocated() / 2**20
    return result
