"""The optional tools part of OrbitMesh: training, procedural data and benchmarks.

``orbitmesh.training``, ``orbitmesh.data`` and ``orbitmesh.bench`` are the ``orbitmesh[train]``
part of the distribution: the Blender add-on's bundled wheel leaves them out, and the runtime
(pipeline, server, models, mesh, imaging, quality, the CLI front door) never imports them. Only
the ``train`` and ``bench`` commands do, when they run, through :func:`import_tool`, which turns
their absence into an error that says how to install them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from orbitmesh.errors import OrbitMeshError

TOOL_PACKAGES = ("orbitmesh.training", "orbitmesh.data", "orbitmesh.bench")
INSTALL_TOOLS = 'pip install "orbitmesh[train]"'


def is_tool_module(name: str) -> bool:
    """True for the tool packages and their submodules (``orbitmesh.bench.lrm``)."""
    return any(name == pkg or name.startswith(pkg + ".") for pkg in TOOL_PACKAGES)


def import_tool(module: str, command: str) -> ModuleType:
    """Import ``module`` (a tool module) for ``orbitmesh COMMAND``; OrbitMeshError if the tools are missing.

    Only a missing tool package becomes the install hint; any other missing import (torch, say)
    propagates unchanged, since installing the tools would not fix it.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not is_tool_module(exc.name):
            raise
        raise OrbitMeshError(f"`orbitmesh {command}` needs the optional training and benchmark tools: {exc.name} "
                             "is not installed (the Blender add-on's bundled backend leaves them out)",
                             fix=INSTALL_TOOLS) from exc
