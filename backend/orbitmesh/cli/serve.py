"""``orbitmesh serve``: the localhost HTTP server (job queue, one GPU worker, SSE, cancel)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from orbitmesh.cli.common import add_settings_args, settings_from_args
from orbitmesh.errors import InputError

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
    parser.add_argument("--quiet", action="store_true", help="do not log every request")
    add_settings_args(parser)  # --output-dir is the jobs root
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orbitmesh.server.app import ServerConfig, make_server

    if not 0 <= args.port <= 65535:
        raise InputError(f"port {args.port} is out of range", fix="use 1-65535, or 0 for a free port")
    if not args.max_upload_mb > 0:
        raise InputError(f"--max-upload-mb must be positive, got {args.max_upload_mb}", fix="e.g. --max-upload-mb 50")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    token = args.token or os.environ.get("ORBITMESH_TOKEN") or None
    settings = settings_from_args(args)
    config = ServerConfig(host=args.host, port=args.port, token=token, allow_remote=args.allow_remote,
                          max_upload_bytes=int(args.max_upload_mb * 2**20), default_model=args.model)
    server = make_server(settings, config)
    # A launcher (the add-on's Start/Stop) ends us with SIGTERM: stop as cleanly as on Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"OrbitMesh server on {server.url}/ (jobs in {server.manager.root.resolve()}, "
          f"{'token required' if token else 'no token'}"
          f"{', commercial use only' if settings.commercial_only else ''}; Ctrl-C stops)", flush=True)
    print(f"orbitmesh serve listening on {server.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr, flush=True)
    finally:
        server.close()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
