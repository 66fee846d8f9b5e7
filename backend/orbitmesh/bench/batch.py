"""``orbitmesh bench batch``: many items through one process (model loaded once), through separate
``orbitmesh generate`` processes, and through a local Ray pool; items per minute and the Ray path's overhead.

The items are seeded stand-in object images (a coloured disc on white, one per seed) run as small tiny-random
jobs, so the numbers are the pipeline's fixed costs (process start, imports, model load, job folders, transfers):
what batching and pools change.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

EXECUTORS = ("local", "separate", "ray")


def _inputs(folder: Path, items: int, size: int = 128) -> list[Path]:
    """``items`` object-like PNGs (a coloured disc with a shadow on white), distinct per index."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size] / size
    paths = []
    for i in range(items):
        rng = np.random.default_rng(i)
        colour = rng.integers(30, 220, 3)
        cx, cy, r = 0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05), rng.uniform(0.2, 0.3)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        img = np.full((size, size, 3), 255, np.uint8)
        img[disc] = colour
        path = folder / f"item{i:03d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def run(*, items: int = 12, workers: int = 2, mc_resolution: int = 40, texture_size: int = 128,
        target_faces: int = 600, executors: Sequence[str] = EXECUTORS, output_dir: str | None = None) -> dict:
    """Time ``items`` tiny-random jobs per executor ("local": ``run_batch`` in this process; "separate": one
    ``orbitmesh generate`` process per item; "ray": ``run_batch`` on a local Ray pool of ``workers``)."""
    from orbitmesh.batch import run_batch
    from orbitmesh.errors import InputError
    from orbitmesh.settings import Settings

    executors = list(executors or EXECUTORS)
    unknown = sorted(set(executors) - set(EXECUTORS))
    if unknown:
        raise InputError(f"unknown executors {unknown}", fix=f"use some of {', '.join(EXECUTORS)}")
    root = Path(output_dir or tempfile.mkdtemp(prefix="orbitmesh-bench-batch-"))
    inputs = _inputs(root / "inputs", items)
    values = {"model": "tiny-random", "mc_resolution": mc_resolution, "texture_size": texture_size,
              "target_faces": target_faces}
    settings = Settings(model_dir=root / "models", output_dir=root / "jobs", device="cpu")
    result: dict = {"bench": "batch", "machine": f"{platform.machine()} {os.cpu_count()} CPUs", "items": items,
                    "workers": workers, "settings": values, "output_dir": str(root)}

    if "local" in executors:
        t0 = time.perf_counter()
        summary = run_batch([root / "inputs"], root / "local", values, settings=settings)
        result["seconds_local"] = round(time.perf_counter() - t0, 2)
        result["done_local"] = summary.done
    if "separate" in executors:
        t0 = time.perf_counter()
        done = 0
        for path in inputs:
            cmd = [sys.executable, "-m", "orbitmesh", "generate", str(path), "-o", str(root / "separate" /
                   f"{path.stem}.glb"), "--output-dir", str(root / "separate" / "jobs"), "--model-dir",
                   str(settings.model_dir), "--device", "cpu", "--model", "tiny-random",
                   "--mc-resolution", str(mc_resolution), "--texture-size", str(texture_size),
                   "--target-faces", str(target_faces)]
            done += subprocess.run(cmd, capture_output=True).returncode == 0
        result["seconds_separate"] = round(time.perf_counter() - t0, 2)
        result["done_separate"] = done
    if "ray" in executors:
        from orbitmesh.executors.ray_pool import RayExecutor

        t0 = time.perf_counter()
        pool = RayExecutor.start("local", workers=workers)
        started = time.perf_counter() - t0
        try:
            summary = run_batch([root / "inputs"], root / "ray", values, settings=settings, executor=pool)
        finally:
            pool.close()
            import ray

            ray.shutdown()
        result["seconds_ray"] = round(time.perf_counter() - t0, 2)
        result["seconds_ray_start"] = round(started, 2)
        result["done_ray"] = summary.done
        # What the Ray path adds per item over the in-process executor, all workers counted: the pool's job time
        # times its workers, less the local executor's, per item (start-up excluded).
        if "seconds_local" in result:
            busy = (result["seconds_ray"] - started) * workers
            result["ray_overhead_per_item_s"] = round((busy - result["seconds_local"]) / items, 3)
    for name in EXECUTORS:
        if f"seconds_{name}" in result:
            result[f"items_per_min_{name}"] = round(60 * items / result[f"seconds_{name}"], 1)
    return result


def format_table(result: dict) -> str:
    lines = [f"batch ({result['machine']}): {result['items']} tiny-random items "
             f"(mc {result['settings']['mc_resolution']}, texture {result['settings']['texture_size']})",
             f"  {'executor':<34} {'seconds':>8} {'items/min':>10} {'done':>5}"]
    labels = {"local": "one process, model loaded once", "separate": "a generate process per item",
              "ray": f"Ray local pool, {result['workers']} workers"}
    for name, label in labels.items():
        if f"seconds_{name}" in result:
            lines.append(f"  {label:<34} {result[f'seconds_{name}']:>8.1f} {result[f'items_per_min_{name}']:>10.1f} "
                         f"{result[f'done_{name}']:>5}")
    if "seconds_ray_start" in result:
        lines.append(f"  (Ray start with its workers: {result['seconds_ray_start']:.1f} s of the Ray time"
                     + (f"; overhead per item over one process: {result['ray_overhead_per_item_s']:+.2f} "
                        "worker-seconds)" if "ray_overhead_per_item_s" in result else ")"))
    return "\n".join(lines)
