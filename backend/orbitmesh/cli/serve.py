"""``orbitmesh serve``: the localhost HTTP server (job queue, one GPU worker, SSE, cancel)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys

from orbitmesh.cli.common import add_settings_args, settings_from_args
from orbitmesh.errors import InputError
from orbitmesh.server.config import ServerConfig
from orbitmesh.server.limits import JobLimits

DEFAULT_PORT = 8765


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve",
                            help="run the HTTP server the Blender add-on talks to (loopback only by default)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need "
                                                             "--allow-remote and a token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--model", help="default model for jobs that do not name one")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted upload (default 50)")
    parser.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    parser.add_argument("--token", default=None,
                        help="require 'Authorization: Bearer TOKEN' (default $ORBITMESH_TOKEN)")
    limits = parser.add_argument_group("what one job may ask for (a 400 names the limit)")
    limits.add_argument("--max-mc-resolution", type=int, default=JobLimits.max_mc_resolution,
                        help=f"largest mc_resolution (default {JobLimits.max_mc_resolution}; memory grows with "
                             "its cube)")
    limits.add_argument("--max-texture-size", type=int, default=JobLimits.max_texture_size,
                        help=f"largest texture_size (default {JobLimits.max_texture_size})")
    limits.add_argument("--max-faces", type=int, default=JobLimits.max_faces,
                        help=f"largest target_faces (default {JobLimits.max_faces})")
    limits.add_argument("--max-memory-gb", type=float, default=None,
                        help="refuse a job whose estimated memory is above this (default 90%% of the RAM)")
    limits.add_argument("--allow-model-paths", action="store_true",
                        help="let clients name any model path or hub id (default: catalogue names and folders "
                             "inside the model folder only)")
    limits.add_argument("--allow-remote-downloads", action="store_true",
                        help="let remote clients start model downloads (POST /models/NAME/download; default: "
                             "only clients on this machine)")
    server = parser.add_argument_group("connections and the jobs folder")
    server.add_argument("--max-connections", type=int, default=ServerConfig.max_connections,
                        help=f"open connections at most, event streams included (default "
                             f"{ServerConfig.max_connections}); more get a 503")
    server.add_argument("--keep-jobs", type=int, default=None,
                        help="keep at most N finished jobs; the oldest finished are removed first")
    server.add_argument("--max-disk-gb", type=float, default=None,
                        help="keep the jobs folder under this size; the oldest finished jobs are removed first")
    pool = parser.add_argument_group("a worker pool on Ray (pip install \"orbitmesh[ray]\")")
    pool.add_argument("--ray", metavar="ADDRESS|auto|local", default=None,
                      help="run jobs on a pool of Ray workers: 'local' starts Ray here, 'auto' joins the cluster Ray "
                           "finds (RAY_ADDRESS or a head on this machine), or a cluster address")
    pool.add_argument("--workers", type=int, default=None,
                      help="how many workers (with --ray; default one per GPU of the cluster, else 2)")
    parser.add_argument("--quiet", action="store_true", help="do not log every request")
    add_settings_args(parser)  # --output-dir is the jobs root
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orbitmesh.executors.base import make_executor
    from orbitmesh.server.app import make_server
    from orbitmesh.server.retention import Retention

    _check_numbers(args)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    token = args.token or os.environ.get("ORBITMESH_TOKEN") or None
    settings = settings_from_args(args)
    limits = JobLimits(max_mc_resolution=args.max_mc_resolution, max_texture_size=args.max_texture_size,
                       max_faces=args.max_faces, max_memory_gb=args.max_memory_gb)
    config = ServerConfig(host=args.host, port=args.port, token=token, allow_remote=args.allow_remote,
                          max_upload_bytes=int(args.max_upload_mb * 2**20), default_model=args.model,
                          max_connections=args.max_connections, limits=limits, allow_model_paths=args.allow_model_paths,
                          retention=Retention(keep_jobs=args.keep_jobs, max_disk_gb=args.max_disk_gb),
                          allow_remote_downloads=args.allow_remote_downloads, access_log=not args.quiet)
    executor = make_executor(args.ray, args.workers) if args.ray or args.workers else None
    try:
        server = make_server(settings, config, executor=executor)
    except BaseException:
        if executor is not None:
            executor.close()
        raise
    # Ctrl-C, or SIGTERM from a launcher (the add-on's Stop, systemd): stop taking jobs; the running job stops at
    # its next progress step and, like the queued ones, runs at the next start.
    stop = lambda signum, frame: server.stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"OrbitMesh server on {server.url}/ (jobs in {server.manager.root.resolve()}, "
          f"{'token required' if token else 'no token'}"
          f"{', commercial use only' if settings.commercial_only else ''}"
          f"{f', {executor.workers} Ray workers' if executor else ''}; API at {server.url}/docs; Ctrl-C stops)",
          flush=True)
    print(f"orbitmesh serve listening on {server.url}", flush=True)
    try:
        server.serve_forever()
        print("stopping: unfinished jobs stay queued for the next start", file=sys.stderr, flush=True)
    finally:
        server.close()
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    """Every number flag finite and in range (``--max-upload-mb inf`` is an error, not a traceback)."""
    if not 0 <= args.port <= 65535:
        raise InputError(f"port {args.port} is out of range", fix="use 1-65535, or 0 for a free port")
    numbers = (("--max-upload-mb", args.max_upload_mb, 4096), ("--max-memory-gb", args.max_memory_gb, 1e5),
               ("--max-disk-gb", args.max_disk_gb, 1e6))
    for flag, value, top in numbers:
        if value is not None and not (math.isfinite(value) and 0 < value <= top):
            raise InputError(f"{flag} must be a positive number up to {top:g}, got {value}",
                             fix=f"e.g. {flag} 50")
    for flag, value in (("--max-mc-resolution", args.max_mc_resolution), ("--max-texture-size", args.max_texture_size),
                        ("--max-faces", args.max_faces), ("--max-connections", args.max_connections)):
        if value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}", fix=f"leave {flag} out for the default")
    if args.keep_jobs is not None and args.keep_jobs < 0:
        raise InputError(f"--keep-jobs must be 0 or more, got {args.keep_jobs}", fix="e.g. --keep-jobs 200")
