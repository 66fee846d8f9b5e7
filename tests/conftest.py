"""Shared test setup: paths to the shared fixtures and samples; Blender resources in a temp dir."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ORBITMESH_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
SAMPLES = SHARED / "samples"

# Blender (bpy) must never write into the real user's config from tests.
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="orbitmesh-blender-"))


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES} (set ORBITMESH_SHARED)")
    return FIXTURES
