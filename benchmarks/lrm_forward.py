"""Full-size VFusion3D LRM forward with random weights; prints a table (same as `orbitmesh bench lrm`).

    python benchmarks/lrm_forward.py                      # encoder, transformer, 256^3 grid, 512^3 extrapolated
    python benchmarks/lrm_forward.py --grid512 full       # time the whole 512^3 grid (minutes on a CPU)
    python benchmarks/lrm_forward.py --device cuda --grid 256 512 --grid512 skip
"""

from __future__ import annotations

import argparse
import json

from orbitmesh.bench import lrm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lrm.add_arguments(parser)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = lrm.run(args)
    print(json.dumps(result) if args.json else lrm.format_table(result))


if __name__ == "__main__":
    main()
