"""The studio zip for real: build the full package for this platform (real wheels, the local CPU torch), install
it into a Blender-only environment the way Blender does, and generate through the In Blender backend.

    python benchmarks/studio_zip.py                       # build, install, generate; prints a table
    python benchmarks/studio_zip.py --zip dist/orbitmesh-0.1.0-linux-x64.zip --json

* build: ``python build.py --full <platform> --no-client`` (skipped with ``--zip``): downloads ~400 MB of wheels
  the first time (pip's cache keeps them).
* the environment: a venv made ``--without-pip`` with only ``bpy==5.0.1`` and ``numpy<2`` (and what bpy itself
  requires: Blender's own bundled modules) installed into it; no torch, no orbitmesh. ``--venv DIR`` reuses one.
* install: ``bpy.ops.extensions.package_install_files`` (Blender's *Install from Disk*) with the Blender user
  folder in a temporary directory: Blender unpacks the manifest's wheels into its extension site-packages.
* generate: ``bpy.ops.orbitmesh.generate(wait=True)`` with the panel's defaults (fast mode, the bundled preview
  model, 20k faces, 1024 px texture) on the preview model's example photo, in the In Blender backend's child
  process (Blender's Python + the bundled wheels).
* then pymeshlab is made unloadable in the extension site-packages (as on a system older than its wheel's
  glibc 2.35) and a second job runs in a fresh worker: it must still make the object, and the worker's log
  must say the pymeshlab fallback is off.

Prints the zip's size and wheel count, the install and generate seconds; exits 0 when both jobs put a textured
object in the scene. tests/addon/test_build.py runs it when ORBITMESH_FULL_BUILD=1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDON = "bl_ext.user_default.orbitmesh"
EXAMPLE = ROOT / "backend" / "orbitmesh" / "weights" / "orbitmesh-preview" / "example.png"
BLENDER_ONLY = ("bpy==5.0.1", "numpy<2")
# What a system whose glibc is older than pymeshlab's wheel's raises when it imports it.
UNLOADABLE = ("raise ImportError(\"/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.35' not found "
              "(required by pymeshlab) [simulated by benchmarks/studio_zip.py]\")\n")


def load_build():
    spec = importlib.util.spec_from_file_location("orbitmesh_build_script", ROOT / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ----- inside the Blender-only environment (run by its Python, bpy imported first) -----------------------


def inside(zip_path: str, image: str, out_path: str) -> int:
    import bpy  # first: before anything that could load pymeshlab (their embree symbols clash)

    out: dict = {"bpy": bpy.app.version_string, "python": sys.executable,
                 "torch_in_env": importlib.util.find_spec("torch") is not None,
                 "orbitmesh_in_env": importlib.util.find_spec("orbitmesh") is not None}
    try:
        t0 = time.perf_counter()
        result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                          enable_on_install=True)
        out["install_s"] = time.perf_counter() - t0
        out["install_result"] = sorted(result)
        out["enabled"] = ADDON in bpy.context.preferences.addons
        prefs_mod = sys.modules[ADDON + ".preferences"]
        session = sys.modules[ADDON + ".core.session"]
        site = prefs_mod.bundled_site_packages()
        out["site_packages"] = site
        out["site_packages_dists"] = len(list(Path(site).glob("*.dist-info"))) if site else 0
        prefs = bpy.context.preferences.addons[ADDON].preferences
        prefs.backend = "INPROCESS"
        prefs.output_dir = str(Path(out_path).parent / "jobs")
        out["refresh"] = sorted(bpy.ops.orbitmesh.refresh_status(wait=True))
        health = session.LAST_HEALTH.get("inprocess", {})
        out["backend_orbitmesh_path"] = health.get("path")
        out["first"] = generate(bpy, session, image, seed=7)
        # A system older than pymeshlab's wheel: importing it fails; a fresh worker must still make the object.
        (Path(site) / "pymeshlab" / "__init__.py").write_text(UNLOADABLE, encoding="utf-8")
        session.stop_workers()
        out["without_pymeshlab"] = generate(bpy, session, image, seed=8)
        log = prefs_mod.user_dir() / "worker.log"
        text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
        out["without_pymeshlab"]["worker_log_note"] = next(
            (line.strip() for line in text.splitlines() if "pymeshlab cannot load" in line), None)
        session.stop_workers()
    except Exception:
        import traceback

        out["fatal"] = traceback.format_exc()
    Path(out_path).write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")
    return 0


def generate(bpy, session, image: str, seed: int) -> dict:
    """One generate with the panel's defaults; what came into the scene."""
    before = {o.name for o in bpy.data.objects}
    t0 = time.perf_counter()
    try:
        res: dict = {"result": sorted(bpy.ops.orbitmesh.generate(image_path=image, seed=seed, wait=True)),
                     "error": None}
    except RuntimeError as exc:
        res = {"result": None, "error": str(exc)}
    res["seconds"] = time.perf_counter() - t0
    new = [o for o in bpy.data.objects if o.name not in before]
    if len(new) == 1:
        obj = new[0]
        mat = obj.active_material
        image_nodes = [n for n in mat.node_tree.nodes if n.type == "TEX_IMAGE" and n.image] if mat and \
            mat.use_nodes else []
        res["object"] = {"name": obj.name, "faces": len(obj.data.polygons), "vertices": len(obj.data.vertices),
                         "uv_layers": len(obj.data.uv_layers),
                         "texture": list(image_nodes[0].image.size) if image_nodes else None}
    rec = session.job_list().records[0]
    res["status"] = rec.status
    job_json = Path(rec.job_dir) / "job.json" if rec.job_dir else None
    if job_json and job_json.is_file():
        record = json.loads(job_json.read_text())
        res["job"] = {k: record.get(k) for k in ("status", "worker_pid", "model", "timings", "stats") if k in record}
    return res


# ----- outside: build, make the environment, run the session, report ---------------------------------------


def make_env(venv: Path) -> float:
    """A venv without pip holding only Blender (bpy) and numpy<2, installed by this Python's pip."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    *BLENDER_ONLY], check=True)
    return time.perf_counter() - t0


def env_packages(python: Path) -> list[str]:
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps(sorted(d.metadata['Name'] for d in m.distributions())))")
    return json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True,
                                     env=clean_env()).stdout)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment less anything that would let the Blender-only Python see other packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", **extra)
    return env


def run(args: argparse.Namespace) -> dict:
    build = load_build()
    platform = build.host_platform()
    report: dict = {"platform": platform}
    if args.zip:
        zip_path = Path(args.zip).resolve()
    else:
        dist = Path(args.dist).resolve()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "build.py"), "--full", platform, "--no-client",
                               "--dist", str(dist)], capture_output=True, text=True)
        report["build_s"] = time.perf_counter() - t0
        report["build_log"] = (proc.stdout + proc.stderr)[-4000:]
        if proc.returncode != 0:
            report["error"] = f"build.py failed (exit {proc.returncode})"
            return report
        zip_path = dist / f"orbitmesh-{build.package_version()}-{platform}.zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    report.update(zip=str(zip_path), size_mib=zip_path.stat().st_size / 2**20,
                  wheels=len([n for n in names if n.startswith("wheels/") and n.endswith(".whl")]),
                  notices="THIRD_PARTY_NOTICES.txt" in names, licence_file="LICENSE" in names)
    tmp = Path(tempfile.mkdtemp(prefix="orbitmesh-studio-zip-"))
    try:
        venv = Path(args.venv).resolve() if args.venv else tmp / "venv"
        if not (venv / "bin" / "python").exists():
            report["env_s"] = make_env(venv)
        python = venv / "bin" / "python"
        report["env_packages"] = env_packages(python)
        out = tmp / "session.json"
        env = clean_env(BLENDER_USER_RESOURCES=str(tmp / "blender"))
        t0 = time.perf_counter()
        proc = subprocess.run([str(python), str(Path(__file__).resolve()), "--inside", str(zip_path),
                               str(args.image), str(out)], cwd=tmp, env=env, capture_output=True, text=True,
                              timeout=args.timeout)
        report["session_s"] = time.perf_counter() - t0
        if not out.is_file():
            report["error"] = f"the Blender session wrote nothing (exit {proc.returncode}): {proc.stderr[-3000:]}"
            return report
        report["session"] = json.loads(out.read_text())
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def problems(report: dict) -> list[str]:
    """What went wrong (empty: the zip works in a Blender-only environment)."""
    if "error" in report:
        return [report["error"]]
    s = report["session"]
    found = [f"fatal: {s['fatal']}"] if "fatal" in s else []
    if s.get("torch_in_env") or s.get("orbitmesh_in_env"):
        found.append("the environment is not Blender-only (torch or orbitmesh importable before the install)")
    if not s.get("enabled"):
        found.append(f"the add-on did not enable: {s.get('install_result')}")
    for key in ("first", "without_pymeshlab"):
        job = s.get(key) or {}
        obj = job.get("object") or {}
        if job.get("result") != ["FINISHED"] or not obj.get("faces") or not obj.get("texture"):
            found.append(f"{key}: no textured object ({job.get('error') or job.get('status')})")
    if s.get("without_pymeshlab") and not s["without_pymeshlab"].get("worker_log_note"):
        found.append("without_pymeshlab: the worker log has no note that pymeshlab cannot load")
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--inside"]:
        return inside(*argv[1:4])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", help="use this full package instead of building one")
    parser.add_argument("--dist", default=str(ROOT / "dist"), help="where build.py writes the zip (default dist/)")
    parser.add_argument("--venv", help="reuse (or create) the Blender-only venv here")
    parser.add_argument("--image", default=str(EXAMPLE), help="the photo to reconstruct")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for the Blender session")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (Blender user folder, jobs)")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args(argv)
    report = run(args)
    report["problems"] = problems(report)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        s = report.get("session", {})
        first, second = s.get("first") or {}, s.get("without_pymeshlab") or {}
        rows = [("platform", report["platform"]),
                ("build", f"{report['build_s']:.1f} s" if "build_s" in report else "(--zip)"),
                ("zip", f"{report.get('size_mib', 0):.2f} MiB, {report.get('wheels', '?')} wheels"),
                ("environment", ", ".join(report.get("env_packages", [])) or "?"),
                ("install (Blender, from disk)", f"{s['install_s']:.1f} s" if "install_s" in s else "?"),
                ("generate (In Blender)", f"{first['seconds']:.1f} s, {first.get('object', {}).get('faces')} faces, "
                 f"texture {first.get('object', {}).get('texture')}" if first else "?"),
                ("generate, pymeshlab unloadable", f"{second['seconds']:.1f} s, "
                 f"{second.get('object', {}).get('faces')} faces" if second else "?"),
                ("note in the worker log", second.get("worker_log_note") or "-")]
        width = max(len(k) for k, _ in rows)
        print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
        for problem in report["problems"]:
            print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
