"""Reconstruction models side by side with random weights; prints a table (same as `orbitmesh bench reconstruction`).

    python benchmarks/reconstruction_models.py                       # VFusion3D and TripoSR, full size: parameters,
                                                                     # encoder, backbone, band grid at 256^3, peak RSS
    python benchmarks/reconstruction_models.py --threads 2 --dense   # also every point of the grid (factorised)
    python benchmarks/reconstruction_models.py --models triposr --grid 256 512
    python benchmarks/reconstruction_models.py --device cuda --dense
    python benchmarks/reconstruction_models.py --json

From Python: ``orbitmesh.bench.reconstruction.run(models=["triposr"], dense=True)`` returns the same dict.
"""

import sys

from orbitmesh.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "reconstruction", *sys.argv[1:]]))
