"""Second-job latency in headless Blender: the In Blender backend with a fresh child per job (before the warm
worker), with the warm worker (after), and the Local server backend; prints a table.

    python benchmarks/blender_second_job.py                                  # tiny-random and orbitmesh-preview
    python benchmarks/blender_second_job.py --models tiny-random --settings fast --repeat 3 --json

Each row runs ``bpy.ops.orbitmesh.generate(wait=True)`` 1 + ``--repeat`` times in a row on the same image and
settings and times each call (the artist's wait: from the click until the object is in the scene). "first" is
the first job (a warm worker or server loads torch and the model then; the server itself was started and
answered /health before), "second" the median of the later ones, "pipeline" the stage time that job.json
records for them (in a fresh child it includes loading the model, which the lrm stage does), "overhead"
second - pipeline (process start, torch import, importing the GLB, transfers).
``--settings default`` uses the panel's defaults (what an artist gets), ``fast`` small ones.

Blender (the ``bpy`` module) is imported first, with its user folder in a temporary directory; the add-on is
the client package built by build.py and installed as an extension. Run it with the Python that has bpy and
orbitmesh installed (the child processes and the server use the same one).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="orbitmesh-bench-blender-"))

import bpy  # noqa: E402  (before anything that could load pymeshlab: their symbols clash)

ADDON = "bl_ext.user_default.orbitmesh"
EXAMPLE = ROOT / "backend" / "orbitmesh" / "weights" / "orbitmesh-preview" / "example.png"
FAST = {"mc_resolution": 64, "target_faces": 1000, "texture_size": 256}
# (row label, backend preference, keep_loaded_minutes)
ROWS = (("In Blender, fresh child per job (before)", "INPROCESS", 0),
        ("In Blender, warm worker (after)", "INPROCESS", 10),
        ("Local server", "SERVER", 0))


def build_client_zip(dist: Path) -> Path:
    spec = importlib.util.spec_from_file_location("orbitmesh_build_script", ROOT / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.build_client(dist).path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install(zip_path: Path) -> None:
    bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    if ADDON not in bpy.context.preferences.addons:
        raise SystemExit("the add-on did not enable")


def run_row(session, prefs, backend: str, keep: int, image: str, settings: dict, jobs: int,
            server_root: Path) -> dict:
    prefs.backend = backend
    prefs.keep_loaded_minutes = keep
    session.stop_workers()
    if backend == "SERVER":
        prefs.server_url = f"http://127.0.0.1:{free_port()}"
        prefs.python_path = sys.executable
        prefs.output_dir = str(server_root / "client")
        result = bpy.ops.orbitmesh.start_server(wait=True, timeout=300.0)
        if result != {"FINISHED"}:
            raise SystemExit(f"the server did not start: {result}")
    seconds, pipeline, pids = [], [], []
    try:
        for _ in range(jobs):
            t0 = time.perf_counter()
            result = bpy.ops.orbitmesh.generate(image_path=image, wait=True, **settings)
            seconds.append(time.perf_counter() - t0)
            if result != {"FINISHED"}:
                raise SystemExit(f"a job did not finish: {result}")
            rec = session.job_list().records[0]
            if rec.job_dir:  # the In Blender backends: the pipeline's folder is on this machine
                record = json.loads((Path(rec.job_dir) / "job.json").read_text())
                pipeline.append(float(sum(record["timings"].values())))
                pids.append(record.get("worker_pid"))
            else:  # the server: its job record carries the pipeline's timings in its result
                pipeline.append(float(sum((server_result(session, prefs) or {}).get("timings", {}).values())))
    finally:
        session.stop_workers()
        if backend == "SERVER":
            session.stop_server()
    later, later_pipeline = seconds[1:], pipeline[1:]
    second = statistics.median(later)
    pipe = statistics.median(later_pipeline) if later_pipeline else float("nan")
    return {"first_s": seconds[0], "second_s": second, "pipeline_s": pipe, "overhead_s": second - pipe,
            "seconds": seconds, "worker_pids": pids}


def server_result(session, prefs) -> dict | None:
    """The newest server job's result (timings) from the server's API."""
    import urllib.request

    rec = session.job_list().records[0]
    with urllib.request.urlopen(f"{prefs.server_url}/jobs/{rec.remote_id}", timeout=10) as resp:
        return json.loads(resp.read()).get("result")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny-random", "orbitmesh-preview"])
    parser.add_argument("--settings", choices=("default", "fast"), default="default",
                        help="the panel's default settings, or small ones (default: default)")
    parser.add_argument("--repeat", type=int, default=2, help="jobs after the first in each row (default 2)")
    parser.add_argument("--image", default=str(EXAMPLE), help="input image (default: the preview model's example)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args(argv)
    # Blender and the glTF importer print to stdout: they go to stderr, the table (or JSON) to stdout.
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    tmp = Path(tempfile.mkdtemp(prefix="orbitmesh-bench-second-job-"))
    install(build_client_zip(tmp / "dist"))
    session = sys.modules[ADDON + ".core.session"]
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.device = args.device
    os.environ.setdefault("ORBITMESH_CONFIG", str(tmp / "no-config.toml"))  # no user config in the children
    results = []
    for model in args.models:
        settings = {"model": model, **(FAST if args.settings == "fast" else {})}
        for label, backend, keep in ROWS:
            prefs.output_dir = str(tmp / "jobs")
            row = run_row(session, prefs, backend, keep, args.image, settings, 1 + args.repeat, tmp / "server")
            row.update(model=model, backend=label)
            results.append(row)
            if not args.json:
                print(f"  {model:18s} {label:42s} first {row['first_s']:6.2f} s  second {row['second_s']:6.2f} s",
                      file=sys.stderr, flush=True)
    bpy.ops.preferences.addon_disable(module=ADDON)  # ends any worker left
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta = {"bench": "blender_second_job", "settings": args.settings, "repeat": args.repeat, "device": args.device,
            "cpus": os.cpu_count(), "load_average": [round(load_before, 2), round(load_after, 2)],
            "bpy": bpy.app.version_string}
    if args.json:
        print(json.dumps({**meta, "rows": results}, indent=1), file=out, flush=True)
        return 0
    lines = [f"Second-job latency in headless Blender {meta['bpy']} ({args.settings} settings, device {args.device}, "
             f"{meta['cpus']} CPUs, load average {load_before:.1f} -> {load_after:.1f}); second = median of "
             f"{args.repeat} job(s) after the first",
             "| model | backend | first job (s) | second job (s) | pipeline (s) | overhead (s) |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['backend']} | {r['first_s']:.2f} | {r['second_s']:.2f} | {r['pipeline_s']:.2f} "
              f"| {r['overhead_s']:.2f} |" for r in results]
    print("\n".join(lines), file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
