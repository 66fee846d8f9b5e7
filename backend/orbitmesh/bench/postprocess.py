"""Post-processing: analytic density field -> decimated, UV-unwrapped, baked GLB, every step timed.

Runs the sphere+torus field at each resolution through three paths in the same process:
``orbitmesh`` (coarse-to-fine extraction, split + tuned xatlas), ``default-xatlas`` (same
mesh, one default-options xatlas call) and ``plain`` (full-resolution marching cubes and one
default xatlas call).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from typing import Sequence

from orbitmesh.errors import InputError

STEPS = ("extract", "clean", "decimate", "normals", "uv", "bake", "export")
PATHS = {
    "orbitmesh": {},
    "default-xatlas": {"uv_options": {"piece_faces": None, "fast": False}},
    "plain": {"extract_stride": 1, "uv_options": {"piece_faces": None, "fast": False}},
}


def run(*, resolution: Sequence[int] = (256, 512), target_faces: int = 20000, texture_size: int = 1024,
        paths: Sequence[str] = tuple(PATHS), repeat: int = 1) -> dict:
    """Time each of ``paths`` (keys of PATHS) at each density grid ``resolution``, keeping the fastest of
    ``repeat`` runs; the headline numbers are the first path at the largest resolution."""
    unknown = sorted(set(paths) - set(PATHS))
    if unknown or not paths or not resolution:
        raise InputError(f"need at least one resolution and one path of {', '.join(PATHS)}; got paths "
                         f"{list(paths)}, resolutions {list(resolution)}", fix="e.g. resolution=(256,), "
                         "paths=('orbitmesh',)")

    from orbitmesh.mesh import field_to_glb
    from orbitmesh.mesh.demo import positional_color, sphere_torus_field

    runs = []
    with tempfile.TemporaryDirectory(prefix="orbitmesh-bench-") as tmp:
        for res in resolution:
            t0 = time.perf_counter()
            density = sphere_torus_field(res)
            field_s = time.perf_counter() - t0
            for name in paths:
                out = os.path.join(tmp, f"{name}-{res}.glb")
                stats = min((field_to_glb(density, positional_color, threshold=0.0, target_faces=target_faces,
                                          texture_size=texture_size, out_path=out, **PATHS[name])
                             for _ in range(max(1, repeat))), key=lambda s: s.seconds_total)
                runs.append({"path": name, "resolution": res, "faces": stats.faces,
                             "vertices": stats.vertices, "uv_coverage": round(stats.uv_coverage, 4),
                             "charts": stats.charts, "extract_stride": stats.extract_stride,
                             "extracted_faces": stats.extracted_faces,
                             "seconds": {k: round(v, 4) for k, v in stats.timings.items()},
                             "seconds_total": round(stats.seconds_total, 4), "repeat": max(1, repeat),
                             "cpu_seconds": {k: round(v, 4) for k, v in stats.cpu_timings.items()},
                             "cpu_seconds_total": round(sum(stats.cpu_timings.values()), 4),
                             "glb_bytes": os.path.getsize(out), "field_seconds_untimed": round(field_s, 3)})
            del density
    head = max((r for r in runs if r["path"] == paths[0]), key=lambda r: r["resolution"])
    return {"bench": "postprocess", "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
            "target_faces": target_faces, "texture_size": texture_size,
            # headline numbers: the first path at the largest resolution
            "resolution": head["resolution"], "path": head["path"], "seconds": head["seconds"],
            "seconds_total": head["seconds_total"], "faces": head["faces"], "uv_coverage": head["uv_coverage"],
            "runs": runs}


def format_table(result: dict) -> str:
    cols = ["res", "path", *STEPS, "total", "cpu", "faces", "uv_cov", "charts", "mc_faces"]
    rows = []
    for r in result["runs"]:
        rows.append([f"{r['resolution']}^3", r["path"], *(f"{r['seconds'].get(s, 0.0):.3f}" for s in STEPS),
                     f"{r['seconds_total']:.3f}", f"{r['cpu_seconds_total']:.3f}", str(r["faces"]),
                     f"{r['uv_coverage']:.1%}", str(r["charts"]),
                     f"{r['extracted_faces']} (stride {r['extract_stride']})"])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    title = (f"postprocess: sphere+torus field -> {result['target_faces']}-face GLB with a "
             f"{result['texture_size']}^2 texture ({result['machine']}; wall seconds per step, "
             f"cpu = CPU seconds incl. children)")
    return "\n".join([title, fmt.format(*cols), *(fmt.format(*row) for row in rows)])
