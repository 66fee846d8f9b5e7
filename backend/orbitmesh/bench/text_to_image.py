"""Text-to-image stage: load time, seconds per denoising step, total, peak and left-over GPU memory.

Runs ``TextToImageStage`` on a model that is already on this machine (never downloads), in a
temporary job folder, exactly as a prompt job does. ``left_after_release_mb`` is the GPU memory
still allocated after the stage released its pipeline (what the 3D models can not use).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from orbitmesh.pipeline.text_to_image import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id (in the cache/model folder) or folder")
    parser.add_argument("--model-dir", help="model folder to look hub ids up in")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model family's)")
    parser.add_argument("--size", type=int, help="image width and height (default: the model's native size)")
    parser.add_argument("--candidates", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--offload", action="store_true", help="model CPU offload (needs accelerate)")
    parser.add_argument("--prompt", default="a wooden chair")


def run(args: argparse.Namespace) -> dict:
    import torch

    from orbitmesh.device import resolve_device
    from orbitmesh.jobs import JobFolder
    from orbitmesh.pipeline.orchestrator import StageContext
    from orbitmesh.pipeline.text_to_image import TextToImageConfig, TextToImageStage

    device = resolve_device(args.device)
    config = TextToImageConfig(model=args.model, steps=args.steps, width=args.size, height=args.size,
                               num_candidates=args.candidates, local_files_only=True, device=args.device,
                               dtype=args.dtype, offload=args.offload, model_dir=args.model_dir)
    marks: list[tuple[int, float]] = []

    def progress(stage: str, step: int, total: int, message: str = "") -> None:
        if step > 0:
            marks.append((step, time.perf_counter()))

    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="orbitmesh-bench-") as tmp:
        job = JobFolder.create(tmp, "bench")
        ctx = StageContext(job=job, progress=progress, state={"prompt": args.prompt, "seed": 0})
        t0 = time.perf_counter()
        TextToImageStage(config).run(ctx)
        total = time.perf_counter() - t0
        record = job.record["text_to_image"]
    steps = [b - a for (_, a), (_, b) in zip(marks, marks[1:])]
    result = {
        "model": args.model, "device": device, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "size": f"{record['width']}x{record['height']}", "steps": record["steps"], "candidates": args.candidates,
        "guidance_scale": record["guidance_scale"],
        "load_s (import + weights + first step)": marks[0][1] - t0 if marks else float("nan"),
        "step_s (median of later steps)": sorted(steps)[len(steps) // 2] if steps else float("nan"),
        "total_s": total,
    }
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["left_after_release_mb"] = torch.cuda.memory_allocated() / 2**20
    return result
