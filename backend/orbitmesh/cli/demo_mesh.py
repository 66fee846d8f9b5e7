"""``orbitmesh demo-mesh -o x.glb``: an analytic textured shape through the real mesh stage."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo-mesh", help="write the GLB of an analytic textured shape (no model needed)")
    parser.add_argument("-o", "--output", default="orbitmesh-demo.glb", help="output .glb/.obj path")
    parser.add_argument("--resolution", type=int, default=192, help="density grid resolution")
    parser.add_argument("--target-faces", type=int, default=20000)
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orbitmesh.mesh.demo import write_demo

    stats = write_demo(args.output, resolution=args.resolution, target_faces=args.target_faces,
                       texture_size=args.texture_size)
    print(f"wrote {args.output}: {stats.summary()}")
    return 0
