"""``orbitmesh orbit IMAGE -o DIR``: SV3D orbit views (21 PNG frames + cameras) of an object image.

``-o DIR`` is the folder the job folder is created in (default: the settings' output_dir);
the job folder holds ``orbit_NN.png``, ``orbit_cameras.json``, ``orbit_input.png`` and ``job.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orbitmesh.cli.common import add_settings_args, console_progress, end_progress, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("orbit", help="image -> SV3D orbit views (PNG frames + cameras)",
                            description="Generate SV3D orbit views of the object in IMAGE. The sv3d_p/sv3d_u "
                                        "weights are gated on the hub: accept the licence and log in, or convert "
                                        "a downloaded checkpoint with `orbitmesh convert-sv3d`.")
    parser.add_argument("image", help="input image (the object is cut out and centred on white)")
    parser.add_argument("-o", "--output", help="folder to create the job folder in (default: --output-dir)")
    # Defaults (None) are OrbitConfig's, the orbit stage's one definition (not imported here: no numpy at --help).
    parser.add_argument("--model", help="sv3d_p (default), sv3d_u, stabilityai/sv3d, a converted folder or an "
                                        "SGM .safetensors")
    parser.add_argument("--steps", type=int, help="sampling steps (default: generate's --orbit-steps default)")
    parser.add_argument("--elevation", type=float, help="camera elevation in degrees (default 10)")
    parser.add_argument("--seed", type=int, help="sampling seed (default 42)")
    parser.add_argument("--num-frames", type=int, help="frames in the orbit (SV3D: 21)")
    parser.add_argument("--size", type=int, help="frame size in pixels (SV3D: 576)")
    parser.add_argument("--decode-chunk", type=int, help="frames decoded at a time (less = less memory)")
    parser.add_argument("--offload", action="store_true", help="move each model to the GPU only while it runs")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_settings_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orbitmesh.errors import InputError
    from orbitmesh.jobs import JobFolder
    from orbitmesh.pipeline.orbit import CAMERAS_FILE, OrbitConfig, OrbitStage
    from orbitmesh.pipeline.orchestrator import Orchestrator

    image = Path(args.image)
    if not image.is_file():
        raise InputError(f"image not found: {image}", fix="check the path")
    settings = settings_from_args(args)
    given = {key: getattr(args, key) for key in ("model", "steps", "elevation", "seed", "num_frames", "size",
                                                 "decode_chunk")}
    cfg = OrbitConfig(offload=args.offload, **{k: v for k, v in given.items() if v is not None}).validate()
    stage = OrbitStage(cfg, settings=settings)
    job = JobFolder.create(Path(args.output) if args.output else settings.output_dir, image.name,
                           settings={"command": "orbit", "image": str(image), **cfg.__dict__,
                                     **settings.to_dict()})
    tracker = console_progress(args.quiet)
    completed = False
    try:
        state, _ = Orchestrator([stage]).run(job, tracker, state={"image_path": str(image)})
        completed = True
    finally:
        end_progress(tracker, completed=completed)
    timings = state.orbit.timings
    print(f"wrote {len(state.orbit.frames)} frames and {CAMERAS_FILE} to {job.path} "
          f"(sampling {timings.get('sample', 0):.1f} s)")
    return 0
