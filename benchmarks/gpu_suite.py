"""Every GPU speed figure in one time-boxed run; prints a table, writes JSON (see docs/benchmarks.md#gpu-suite).

    python benchmarks/gpu_suite.py --dry-run                  # tiny configs, seconds on a CPU: tests the suite
    python benchmarks/gpu_suite.py --json --out $OUT/gpu-suite.json        # the real run on a GPU machine
    python benchmarks/gpu_suite.py --sections fast_vfusion3d sv3d_orbit --budget-s 300

Sections: fast_vfusion3d, fast_triposr (fast mode image -> GLB per stage at 256^3 and 512^3), sv3d_orbit (21
frames, 50 steps, without and with offload), quality (end to end), text_to_image (tiny pipeline: overhead),
training (configs/preview.toml steps/s). Full size, random weights, nothing downloaded; a section that would
overrun the budget (--budget-s, default 540) is skipped with the reason, one that fails is reported and the
suite goes on. The GPU machine's missing packages travel as wheels: scripts/gpu_wheels.py.

From Python: ``orbitmesh.bench.gpu_suite.run_suite(dry_run=True)`` returns the same dict.
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if importlib.util.find_spec("orbitmesh") is None:  # not installed: run from the checkout's sources
    sys.path.insert(0, str(HERE.parent / "backend"))

from orbitmesh.bench.gpu_suite import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], scripts_dir=HERE))
