"""Full-size VFusion3D LRM forward with random weights; prints a table (same as `orbitmesh bench lrm`).

    python benchmarks/lrm_forward.py                          # encoder, transformer, grids 256^3 + 512^3 (band),
                                                              # brute-force baseline extrapolated, analytic-object band
    python benchmarks/lrm_forward.py --dense                  # also the factorised full grid
    python benchmarks/lrm_forward.py --grid 256 --baseline full   # run the brute-force grid in full (minutes on a CPU)
    python benchmarks/lrm_forward.py --device cuda --dense
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
