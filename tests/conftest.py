"""Shared test setup for every folder: repository and shared-data paths, the glTF validator, small inputs
(object images, a CPU settings stack, fast tiny-random request settings, the tiny random LRM) and
subprocess runners. Folder-specific helpers live in each folder's own conftest.py.

Test modules take these as fixtures (never ``from conftest import ...``: with one conftest.py per folder
that name is ambiguous). Fixtures that hand out a helper function are session-scoped so that
module-scoped fixtures can use them too.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ORBITMESH_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
SAMPLES = SHARED / "samples"
NODE_DIR = ROOT / "tests" / "node"  # the Khronos glTF validator (cd tests/node && npm install)
SAMPLE_PHOTO = "a_product_photo_of_a_toy_tank.jpg"

# Blender (bpy) must never write into the real user's config from tests.
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="orbitmesh-blender-"))
# One torch thread: the test machines are small and shared, and the tiny models gain nothing from more.
torch.set_num_threads(1)


# ----- paths ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder (README.md, build.py, blender_addon/, configs/, scripts/)."""
    return ROOT


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """../shared/fixtures (reference-parity files); skips where it is missing."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES} (set ORBITMESH_SHARED)")
    return FIXTURES


@pytest.fixture(scope="session")
def sample_photo() -> str:
    """A real product photo from ../shared/samples (a toy tank on a studio background); skips where missing."""
    path = SAMPLES / SAMPLE_PHOTO
    if not path.is_file():
        pytest.skip(f"samples not found at {SAMPLES} (set ORBITMESH_SHARED)")
    return str(path)


# ----- checks and inputs -----------------------------------------------------------------------------------

def _validate_glb(path: Path) -> dict:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("node + gltf-validator not installed (cd tests/node && npm install)")
    out = subprocess.run(["node", str(NODE_DIR / "validate_gltf.js"), str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def validate_glb() -> Callable[[Path], dict]:
    """validate_glb(path) -> the Khronos glTF validator's report (``report["issues"]["numErrors"]`` ...)."""
    return _validate_glb


def _object_image(size: int = 128, color: tuple[int, int, int] = (200, 60, 40)) -> Image.Image:
    """(size, size) RGB: a shaded disc on a white studio background, something preprocessing can cut out."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - size / 2, yy - size / 2) / (size * 0.3)
    img = np.full((size, size, 3), 255, np.uint8)
    inside = r < 1
    shade = (1 - 0.5 * r[inside] ** 2)[:, None]
    img[inside] = (np.array(color)[None] * shade).astype(np.uint8)
    return Image.fromarray(img)


@pytest.fixture(scope="session")
def object_image() -> Callable[..., Image.Image]:
    """object_image(size=128, color=(200, 60, 40)) -> an object photo stand-in (PIL RGB image)."""
    return _object_image


def _png_bytes(image: Image.Image, fmt: str = "PNG", **save_args) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **save_args)
    return buf.getvalue()


@pytest.fixture(scope="session")
def png_bytes() -> Callable[..., bytes]:
    """png_bytes(image, fmt="PNG", **save_args) -> the encoded file (any format Pillow writes)."""
    return _png_bytes


@pytest.fixture(scope="session")
def cpu_settings():
    """cpu_settings(folder) -> Settings on the CPU with models in folder/models and jobs in folder/jobs."""
    from orbitmesh.settings import Settings

    def make(folder: Path) -> Settings:
        return Settings(model_dir=folder / "models", output_dir=folder / "jobs", device="cpu")

    return make


@pytest.fixture(scope="session")
def small_request() -> dict:
    """Request settings for a fast tiny-random job (seconds on a CPU); copy before changing."""
    return {"model": "tiny-random", "mc_resolution": 40, "target_faces": 600, "texture_size": 128}


@pytest.fixture(scope="session")
def random_lrm():
    """(model, planes): the tiny-random LRM and the planes of one forward pass on a seeded random image
    (a noisy field, realistic for random weights)."""
    from orbitmesh.models.registry import tiny_random_lrm

    model = tiny_random_lrm()
    with torch.no_grad():
        planes = model(torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(0)))
    return model, planes


def _point_query_density(model, planes, resolution: int) -> np.ndarray:
    from orbitmesh.pipeline.reconstruct import lrm_points_from_output

    axis = torch.linspace(-1, 1, resolution)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(1, -1, 3)
    with torch.no_grad():
        sigma = model.query_points(planes, lrm_points_from_output(pts))["sigma"]
    return sigma.reshape(resolution, resolution, resolution).numpy()


@pytest.fixture(scope="session")
def point_query_density() -> Callable[..., np.ndarray]:
    """point_query_density(model, planes, R) -> (R, R, R) density from one direct point query per grid point
    (output frame, 'ij' indexing, turned into the LRM frame): the reference the streamed grids must equal."""
    return _point_query_density


@pytest.fixture
def no_user_hub_cache(tmp_path, monkeypatch) -> Path:
    """Point the catalogue's user hub cache (where text-to-image also looks) at an empty folder, not this
    machine's; returns that folder."""
    from orbitmesh.models import catalogue

    cache = tmp_path / "user-hub-cache"
    monkeypatch.setattr(catalogue, "default_hub_cache", lambda: cache)
    return cache


# ----- subprocesses ----------------------------------------------------------------------------------------

def _run_python(code: str, *, without: Sequence[str] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    prelude = "".join(f"import sys; sys.modules[{name!r}] = None\n" for name in without)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_python() -> Callable[..., subprocess.CompletedProcess]:
    """run_python(code, without=("torch", ...), timeout=120): ``code`` in a fresh interpreter where each module
    named in ``without`` fails to import (``sys.modules[name] = None``, as where it is not installed)."""
    return _run_python


def _run_orbitmesh(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orbitmesh", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def run_orbitmesh() -> Callable[..., subprocess.CompletedProcess]:
    """run_orbitmesh(*args, timeout=300, env=None): ``python -m orbitmesh ARGS`` as a child process."""
    return _run_orbitmesh
