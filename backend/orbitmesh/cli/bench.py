"""``orbitmesh bench NAME``: benchmarks that print a table (or one JSON object with --json).

Each benchmark lives in ``orbitmesh.bench.<module>`` (the optional ``orbitmesh[train]`` part) as
``run(**keywords) -> dict``, with an optional ``format_table(result) -> str``. Its command-line
arguments are declared here, apart from the module, so that building the parser imports neither
the bench code nor torch; every argument's ``dest`` is a keyword of ``run`` with the same default
(tests/training/test_bench.py holds the two together). The module is imported only when its benchmark runs.
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from typing import Any

from orbitmesh.cli.optional import INSTALL_TOOLS, import_tool


@dataclass(frozen=True)
class Arg:
    """One ``parser.add_argument(*flags, **options)`` call."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class Bench:
    module: str  # under orbitmesh.bench
    help: str
    args: tuple[Arg, ...]


POSTPROCESS_PATHS = ("orbitmesh", "default-xatlas", "plain")  # orbitmesh.bench.postprocess.PATHS
RECONSTRUCTION_MODELS = ("vfusion3d", "triposr")  # orbitmesh.bench.reconstruction.MODELS
BATCH_EXECUTORS = ("local", "separate", "ray")  # orbitmesh.bench.batch.EXECUTORS

# bench name -> its module and arguments, in the order `orbitmesh bench --help` lists them
BENCHES: dict[str, Bench] = {
    "postprocess": Bench("postprocess", "Post-processing: analytic density field -> decimated, UV-unwrapped, "
                                        "baked GLB, every step timed.", (
        arg("--resolution", type=int, nargs="+", default=[256, 512],
            help="density grid resolution(s) (default: 256 512)"),
        arg("--target-faces", type=int, default=20000),
        arg("--texture-size", type=int, default=1024),
        arg("--paths", nargs="+", default=list(POSTPROCESS_PATHS), choices=POSTPROCESS_PATHS,
            help="which pipelines to time (default: all)"),
        arg("--repeat", type=int, default=1,
            help="run each path N times and keep the fastest run (shared machines are noisy)"),
    )),
    "quality": Bench("quality", "Reconstruction quality on held-out procedural objects: IoU, Chamfer-L1, "
                                "novel-view PSNR.", (
        arg("--model", help="model to evaluate (default: orbitmesh-preview, the bundled preview model)"),
        arg("--count", type=int, default=100, help="number of procedural objects (default 100)"),
        arg("--seed", type=int, help="first object seed (default: the first held-out seed; training seeds are "
                                     "below it)"),
        arg("--grid", type=int, default=64, help="IoU/Chamfer grid resolution over [-1, 1]^3"),
        arg("--views", type=int, default=8, help="novel views per object for PSNR"),
        arg("--view-size", type=int, default=64, help="novel view resolution"),
        arg("--device", default="cpu", help="cpu, cuda, mps or auto"),
        arg("--threads", type=int, help="torch CPU threads"),
        arg("--sheet", default="orbitmesh-output/quality-contact-sheet.png",
            help="contact sheet PNG path (at most 16 rows)"),
    )),
    "fast-texture": Bench("fast_texture", "Fast mode before/after the input-view texture and the silhouette "
                                          "carving: PSNR and silhouette IoU on held-out procedural objects.", (
        arg("--model", help="model to run (default: orbitmesh-preview, the bundled preview model)"),
        arg("--count", type=int, default=20, help="number of procedural objects (default 20)"),
        arg("--seed", type=int, default=1_000_000, help="first object seed (default 1000000: held out)"),
        arg("--texture-size", type=int, default=1024, help="the jobs' texture size (default 1024)"),
        arg("--mc-resolution", type=int, default=256, help="the jobs' density grid resolution (default 256)"),
        arg("--device", default="cpu", help="cpu, cuda, mps or auto"),
        arg("--output-dir", default="orbitmesh-output/bench-fast-texture",
            help="where the input PNGs, the jobs and both GLBs of every object are kept"),
        arg("--each-switch", action="store_true",
            help="also run each switch alone and split the near views' error by silhouette (JSON key switches)"),
    )),
    "lrm": Bench("lrm", "Full-size VFusion3D LRM forward with random weights: encoder, transformer, grid query, "
                        "peak memory.", (
        arg("--device", default="auto", help="auto, cpu or cuda"),
        arg("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"),
        arg("--grid", type=int, nargs="*", default=[256, 512], help="grid resolutions"),
        arg("--dense", action="store_true", help="also time the factorised full grid"),
        arg("--baseline", choices=("extrapolate", "full", "skip"), default="extrapolate",
            help="brute-force per-point grid: extrapolate from --chunks chunks, run in full, or skip"),
        arg("--chunks", type=int, default=4, help="chunks timed when extrapolating the baseline"),
        arg("--no-blob", dest="blob", action="store_false", help="skip the analytic-object band timings"),
        arg("--config", default="vfusion3d", help="LRM preset (vfusion3d or tiny)"),
    )),
    "reconstruction": Bench("reconstruction", "Reconstruction models side by side (VFusion3D, TripoSR) with random "
                                              "weights: parameters, encoder, backbone, grid query, peak memory.", (
        arg("--models", nargs="+", default=list(RECONSTRUCTION_MODELS), choices=RECONSTRUCTION_MODELS,
            help="models to time, one at a time (default: all)"),
        arg("--size", choices=("full", "tiny"), default="full",
            help="full: the released configs; tiny: the tiny test configs"),
        arg("--device", default="auto", help="auto, cpu or cuda"),
        arg("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"),
        arg("--grid", type=int, nargs="*", default=[256], help="grid resolutions (default: 256)"),
        arg("--dense", action="store_true", help="also time the factorised full grid"),
    )),
    "text-to-image": Bench("text_to_image", "Text-to-image stage: load time, seconds per denoising step, total, "
                                            "peak and left-over GPU memory.", (
        arg("--model", help="hub id (in the cache/model folder) or folder (default: the default text-to-image "
                            "model)"),
        arg("--model-dir", help="model folder to look hub ids up in"),
        arg("--steps", type=int, help="denoising steps (default: the model family's)"),
        arg("--size", type=int, help="image width and height (default: the model's native size)"),
        arg("--candidates", type=int, default=1),
        arg("--device", default="auto"),
        arg("--dtype", default="auto"),
        arg("--offload", action="store_true", help="model CPU offload (needs accelerate)"),
        arg("--prompt", default="a wooden chair"),
    )),
    "texture-projection": Bench("texture_projection", "Texture projection: texture a perturbed mesh from 21 orbit "
                                                      "renders of a known textured object.", (
        arg("--frame-size", type=int, default=256, help="orbit frame size in pixels (SV3D: 576)"),
        arg("--texture-size", type=int, default=512),
        arg("--target-faces", type=int, default=8000, help="faces of the perturbed mesh"),
        arg("--jitter", type=float, default=0.003, help="vertex jitter along normals (world units)"),
        arg("--blur", type=float, default=0.04, help="colour-field blur sigma (world units)"),
        arg("--elevation", type=float, default=10.0),
        arg("--device", default="cpu", help="torch device for rasterising/projecting (cpu, cuda)"),
    )),
    "refinement": Bench("refinement", "Triplane refinement: silhouette IoU against 21 orbit views before/after "
                                      "refining a degraded triplane.", (
        arg("--seed", type=int, default=1_000_004, help="procedural object (held-out seeds >= 1e6)"),
        arg("--view-size", type=int, default=64, help="orbit view size in pixels"),
        arg("--steps", type=int, default=250, help="refinement steps"),
        arg("--rays", type=int, default=1024, help="rays per refinement step"),
        arg("--samples", type=int, default=16, help="stratified (= importance) samples per ray"),
        arg("--channels", type=int, default=16, help="triplane channels"),
        arg("--plane-size", type=int, default=64, help="triplane resolution"),
        arg("--fit-steps", type=int, default=150, help="steps fitting the degraded triplane"),
        arg("--freeze-decoder", action="store_true",
            help="optimise the planes only (default: planes + decoder MLP, lr 1e-3)"),
        arg("--device", default="cpu"),
    )),
    "batch": Bench("batch", "Batches: items per minute in one process (model loaded once), as separate generate "
                            "processes, and on a local Ray pool; the Ray path's overhead per item.", (
        arg("--items", type=int, default=12, help="tiny-random items (default 12)"),
        arg("--workers", type=int, default=2, help="Ray pool workers (default 2)"),
        arg("--mc-resolution", type=int, default=40),
        arg("--texture-size", type=int, default=128),
        arg("--target-faces", type=int, default=600),
        arg("--executors", nargs="+", choices=BATCH_EXECUTORS, default=list(BATCH_EXECUTORS),
            help="which to time (default: all; 'ray' needs orbitmesh[ray])"),
        arg("--output-dir", default=None, help="keep the inputs and outputs here (default: a temp folder)"),
    )),
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="run a benchmark and print a table or JSON",
                            description=f"Run a benchmark (needs the optional tools: {INSTALL_TOOLS}).")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, bench in BENCHES.items():
        p = benches.add_parser(name, help=bench.help, description=bench.help)
        keys = tuple(p.add_argument(*a.flags, **a.options).dest for a in bench.args)
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        p.set_defaults(func=functools.partial(_run, name, keys))


def _run(name: str, keys: tuple[str, ...], args: argparse.Namespace) -> int:
    """Run benchmark ``name`` with its own parsed arguments (``keys``) as keywords; print the result."""
    mod = import_tool(f"orbitmesh.bench.{BENCHES[name].module}", f"bench {name}")
    result = mod.run(**{k: v for k, v in vars(args).items() if k in keys})
    if args.json:
        print(json.dumps(result, default=float))
    else:
        print(mod.format_table(result) if hasattr(mod, "format_table") else format_table(result))
    return 0


def format_table(result: dict) -> str:
    width = max(len(k) for k in result)
    lines = []
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.3f}"
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)
