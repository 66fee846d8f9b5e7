"""Native libraries that must be imported on the main thread before ``generate()`` runs in a thread.

pymeshlab loads Qt, which adopts the thread that imports it; imported first inside a worker
thread (after torch), glibc aborts the process at exit ("corrupted double-linked list" while
torch's oneDNN cache is freed). Anyone who runs the pipeline in a thread (the server, an
embedding application) calls :func:`preload_native_libraries` on the main thread first; the
first job then does not pay torch's import time either.

pymeshlab may be installed but unloadable (Blender's full package bundles its Linux wheel, which needs
glibc 2.35): then only its decimation fallback is off, see :func:`orbitmesh.mesh.decimate.load_pymeshlab`.
"""

from __future__ import annotations

import importlib
import importlib.util


def preload_native_libraries() -> None:
    """Import torch and pymeshlab (those installed) from the calling thread, meant to be the main one."""
    if importlib.util.find_spec("torch") is not None:
        importlib.import_module("torch")
    if importlib.util.find_spec("pymeshlab") is not None:
        from orbitmesh.mesh.decimate import load_pymeshlab

        load_pymeshlab()  # a failure is logged once and disables the fallback
