"""Full-size VFusion3D LRM forward with random weights; prints a table (same as `orbitmesh bench lrm`).

    python benchmarks/lrm_forward.py                          # encoder, transformer, grids 256^3 + 512^3 (band),
                                                              # brute-force baseline extrapolated, analytic-object band
    python benchmarks/lrm_forward.py --dense                  # also the factorised full grid
    python benchmarks/lrm_forward.py --grid 256 --baseline full   # run the brute-force grid in full (minutes on a CPU)
    python benchmarks/lrm_forward.py --device cuda --dense
    python benchmarks/lrm_forward.py --json

From Python: ``orbitmesh.bench.lrm.run(grid=[256], dense=True)`` returns the same dict.
"""

import sys

from orbitmesh.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "lrm", *sys.argv[1:]]))
