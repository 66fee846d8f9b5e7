"""Build the OrbitMesh Blender extension zips (dist/orbitmesh-<version>-<platform>.zip).

Completed by issue 5 (Blender add-on, localhost server, and build.py).
"""

import sys

if __name__ == "__main__":
    sys.exit("build.py: the add-on packaging lands with issue 5 (Blender add-on, server and build.py)")
