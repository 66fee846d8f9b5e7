"""Full-size models end to end with random weights, in the released file layouts, through the real commands.

    python benchmarks/full_size_e2e.py                    # VFusion3D (GitHub + hub), TripoSR, then SV3D quality mode
    python benchmarks/full_size_e2e.py --only vfusion3d triposr --json
    python benchmarks/full_size_e2e.py --only sv3d --orbit-steps 2 --cache /big/disk/full-size

Builds random-weight models of the released configurations in the layouts users download (cached in
``--cache``, default ``~/.cache/orbitmesh/full-size``; about 24 GB with SV3D), calibrates each LRM's density
bias so its field crosses the mesh threshold, then runs ``orbitmesh generate`` (fast mode per LRM layout,
quality mode with the converted SV3D folder) as child processes and reports the seconds per stage, the
peak RSS and the GLB of each run. Minutes for the LRMs on a CPU, tens of minutes for SV3D; never run in CI.
Details: ``orbitmesh.bench.full_size`` and docs/benchmarks.md ("full size end to end").
"""

import sys

from orbitmesh.bench.full_size import main

if __name__ == "__main__":
    sys.exit(main())
