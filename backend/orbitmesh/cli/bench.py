"""``orbitmesh bench NAME``: benchmarks that print a table (or one JSON object with --json).

Each benchmark lives in ``orbitmesh.bench.<module>`` with ``add_arguments(parser)`` and
``run(args) -> dict``; the dict is printed as JSON or as a table.
"""

from __future__ import annotations

import argparse
import importlib
import json

# bench name -> module under orbitmesh.bench
BENCHES: dict[str, str] = {"postprocess": "postprocess", "quality": "quality", "lrm": "lrm", "text-to-image": "text_to_image",
                       "texture-projection": "texture_projection", "refinement": "refinement"}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="run a benchmark and print a table or JSON")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, module in BENCHES.items():
        mod = importlib.import_module(f"orbitmesh.bench.{module}")
        p = benches.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        mod.add_arguments(p)
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        p.set_defaults(func=lambda args, mod=mod: _run(mod, args))


def _run(mod, args: argparse.Namespace) -> int:
    result = mod.run(args)
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
