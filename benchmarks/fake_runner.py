"""A fast stand-in for the pipeline, so that load benchmarks of ``orbitmesh serve`` measure the HTTP layer and the
job queue rather than the GPU (used by benchmarks/server_load.py ``--runner fake``).

    python -c "import sys; sys.path.insert(0, 'benchmarks'); import fake_runner; fake_runner.serve()" \\
        --port 0 --output-dir /tmp/om-bench --job-ms 50

Each job reports progress, sleeps ``--job-ms`` and leaves what generate() leaves: a pipeline job folder under the
run's output_dir with a tiny ``model.glb``. A job with seed :data:`HOLD_SEED` runs until it is cancelled (at most
:data:`HOLD_MAX_S`), reporting progress every 100 ms like a real job: the benchmark's way to keep the worker
busy while it holds event streams open on a queued job.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Callable

HOLD_SEED = 4_000_000_000  # inside the seed range (0 .. 2**32 - 1)
HOLD_MAX_S = 120.0


def tiny_glb() -> bytes:
    """The smallest valid GLB: header + one JSON chunk (``{"asset": {"version": "2.0"}}``, space padded)."""
    doc = json.dumps({"asset": {"version": "2.0"}}).encode()
    doc += b" " * (-len(doc) % 4)
    return struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(doc)) + struct.pack("<I4s", len(doc), b"JSON") + doc


def make_runner(job_ms: float) -> Callable:
    """A server runner (request, settings, tracker) -> GenerateResult that takes about ``job_ms`` milliseconds."""
    from orbitmesh.jobs import JobFolder
    from orbitmesh.pipeline.request import GenerateResult

    glb_bytes = tiny_glb()

    def run(request, settings, tracker) -> GenerateResult:
        tracker.plan(["fake"])
        if request.seed == HOLD_SEED:
            start = time.monotonic()
            step = 0
            while time.monotonic() - start < HOLD_MAX_S:  # the tracker raises JobCancelled once cancelled
                tracker("fake", step, 0, "holding the worker")
                step += 1
                time.sleep(0.1)
        else:
            tracker("fake", 0, 1, "sleeping")
            time.sleep(job_ms / 1000)
            tracker("fake", 1, 1, "writing a tiny GLB")
        folder = JobFolder.create(settings.output_dir, "fake")
        glb = folder.write_bytes("model.glb", glb_bytes)
        folder.update(status="done")
        return GenerateResult(job_dir=folder.path, glb_path=glb, request=request, model="fake")

    return run


def serve(argv: list[str] | None = None) -> int:
    """Run a server with the fake runner until SIGTERM/Ctrl-C; prints "orbitmesh serve listening on URL" like
    ``orbitmesh serve`` once it accepts connections."""
    from orbitmesh.server.app import ServerConfig, make_server
    from orbitmesh.settings import Settings

    parser = argparse.ArgumentParser(description="orbitmesh serve with a fake, fast runner")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--output-dir", required=True, help="jobs in OUTPUT_DIR/jobs, models in OUTPUT_DIR/models")
    parser.add_argument("--job-ms", type=float, default=50.0, help="how long each job takes (default 50)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    root = Path(args.output_dir)
    settings = Settings(model_dir=root / "models", output_dir=root / "jobs", device="cpu")
    server = make_server(settings, ServerConfig(port=args.port), runner=make_runner(args.job_ms))
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"orbitmesh serve listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
