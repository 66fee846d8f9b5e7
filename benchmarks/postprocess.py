"""Post-processing benchmark (same as `orbitmesh bench postprocess`); prints the table.

    python benchmarks/postprocess.py [--resolution 256 512] [--json]
"""

import sys

from orbitmesh.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "postprocess", *sys.argv[1:]]))
