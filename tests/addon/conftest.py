"""Setup shared by the add-on tests: the add-on's bpy-free modules importable, build.py loaded by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# `import blender_addon` (its core/ and contract.py need no bpy) from the repository root.
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def build():
    """The repository's build.py as a module, loaded by path under its own name (a PyPI package called
    `build` may be installed too)."""
    spec = importlib.util.spec_from_file_location("orbitmesh_build_script", REPO / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
