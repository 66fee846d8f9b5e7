"""The ``orbitmesh`` command line. One module per command; each has ``register(subparsers)``.

Commands import their heavy dependencies (torch, models) only when they run, so building the
parser, ``--version``, ``--help``, ``doctor`` and ``serve --help`` work where torch is not
installed (tests/cli/test_front_door.py). The optional tools (training, data, benchmarks) are
imported only by the ``train`` and ``bench`` commands (see :mod:`orbitmesh.cli.optional`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from orbitmesh import __version__
from orbitmesh.errors import JobCancelled, OrbitMeshError

# Module names under orbitmesh.cli, in the order `orbitmesh --help` lists them.
COMMAND_MODULES = ("generate", "batch", "demo_mesh", "doctor", "bench", "serve", "verify_reference", "orbit",
                   "convert_sv3d", "train", "worker", "models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orbitmesh", description="Local image/text-to-3D for Blender.")
    parser.add_argument("--version", action="version", version=f"orbitmesh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"orbitmesh.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except JobCancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except OrbitMeshError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"fix: {exc.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
