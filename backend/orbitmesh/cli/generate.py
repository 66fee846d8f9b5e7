"""``orbitmesh generate IMAGE -o OUT.glb``: image (or ``--prompt``) to textured mesh (fast mode).

``--progress jsonl`` prints one JSON object per line on stdout (the add-on's subprocess
protocol): {"event": "progress", "stage", "step", "total", "message", "eta_s", "progress"} (progress:
0..1 over the whole job), then
{"event": "done", "result": {...}} or {"event": "error", "message", "fix"} or
{"event": "cancelled"}. Ctrl-C (SIGINT) and SIGTERM both stop the job at once, as a KeyboardInterrupt
(SIGTERM also cancels the tracker, so a stage that swallowed the interrupt still stops at its next progress
step): the job folder is marked cancelled ("interrupted (Ctrl-C)" / "terminated (SIGTERM)") and the exit code
is 130 for Ctrl-C, 143 for SIGTERM, in both progress modes. Input errors (a missing image, an output path that
cannot be written, checked before any model loads) exit 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from orbitmesh.cli.common import (
    add_request_args,
    add_settings_args,
    console_progress,
    end_progress,
    request_settings_from_args,
    settings_from_args,
)
from orbitmesh.errors import InputError, JobCancelled, OrbitMeshError
from orbitmesh.progress import ProgressEvent, ProgressTracker

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, to unwind exactly as Ctrl-C does (the job ends cancelled)."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("generate", help="image (or prompt) -> textured GLB",
                            description="Image (or prompt) to a textured GLB. `--model tiny-random` is a plumbing "
                                        "check (random weights, blobby shapes), not a model.")
    parser.add_argument("image", nargs="?", help="input image (or use --prompt)")
    parser.add_argument("--prompt", help="text prompt instead of an image (needs a text-to-image model)")
    parser.add_argument("-o", "--output", help="also copy the GLB here (.glb)")
    add_request_args(parser)
    parser.add_argument("--progress", choices=("text", "jsonl"), default="text",
                        help="progress on stderr as text, or JSON lines on stdout")
    parser.add_argument("--quiet", action="store_true", help="no text progress")
    add_settings_args(parser)
    parser.set_defaults(func=run)


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _tracker(mode: str, quiet: bool) -> ProgressTracker:
    if mode == "text":
        return console_progress(quiet)

    def show(event: ProgressEvent) -> None:
        _emit({"event": "progress", "stage": event.stage, "step": event.step, "total": event.total,
               "message": event.message, "eta_s": event.eta_s, "progress": event.progress})

    return ProgressTracker(listener=show)


def run(args: argparse.Namespace) -> int:
    jsonl = args.progress == "jsonl"
    tracker = _tracker(args.progress, args.quiet)
    completed = False
    terminated: list[bool] = []  # set by the SIGTERM handler
    try:
        result = _generate(args, tracker, terminated)
        completed = True
    except (JobCancelled, KeyboardInterrupt) as exc:
        terminated_now = bool(terminated) or isinstance(exc, Terminated)
        if jsonl:
            _emit({"event": "cancelled"})
        else:
            why = "terminated (SIGTERM)" if terminated_now else (
                "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else "stopped")
            print(f"{why}: job cancelled", file=sys.stderr)
        return EXIT_TERMINATED if terminated_now else EXIT_INTERRUPTED
    except OrbitMeshError as exc:
        if not jsonl:
            raise
        _emit({"event": "error", "message": exc.message, "fix": exc.fix})
        return 2
    finally:
        end_progress(tracker, completed=completed)  # the last bar at 100 % only when the job completed
    if jsonl:
        _emit({"event": "done", "result": result.to_dict()})
    else:
        mesh = result.stats.get("mesh", {})
        where = args.output or result.glb_path
        print(f"wrote {where}: {mesh.get('faces', '?')} faces, model {result.model}, "
              f"{sum(result.timings.values()):.1f}s (job {result.job_dir})")
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def _generate(args: argparse.Namespace, tracker: ProgressTracker, terminated: list[bool]):
    from orbitmesh.pipeline.generate import generate
    from orbitmesh.pipeline.request import GenerateRequest

    if (args.image is None) == (args.prompt is None):
        raise InputError("give exactly one of IMAGE or --prompt", fix="orbitmesh generate photo.png -o out.glb")
    request = GenerateRequest(image_path=args.image, prompt=args.prompt, output=args.output,
                              **request_settings_from_args(args))
    settings = settings_from_args(args)

    def on_sigterm(signum: int, frame: object) -> None:
        tracker.cancel()  # a stage that swallowed the interrupt still stops at its next progress step
        if not terminated:  # once: a second SIGTERM must not break the cleanup of the first
            terminated.append(True)
            raise Terminated("terminated (SIGTERM)")

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return generate(request, settings=settings, progress=tracker)
    finally:
        signal.signal(signal.SIGTERM, previous)
