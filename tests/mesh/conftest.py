"""Helpers shared by the mesh-stage tests: analytic fields, the mesh steps before UVs, UV-mesh checks, GLB reading."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from orbitmesh.mesh import clean_mesh, decimate, extract_surface, orient_outward, overlap_texels
from orbitmesh.mesh.uv import folded_faces


def _sphere_field(c: tuple[float, float, float] = (0.0, 0.0, 0.0), r: float = 0.6, res: int = 96) -> np.ndarray:
    ax = np.linspace(-1, 1, res, dtype=np.float32)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    return (r - np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)).astype(np.float32)


@pytest.fixture(scope="session")
def sphere_field() -> Callable[..., np.ndarray]:
    """sphere_field(c=(0, 0, 0), r=0.6, res=96) -> (res, res, res) float32 signed distance (positive inside)
    of a sphere, sampled on [-1, 1]^3."""
    return _sphere_field


def _surface_mesh(density: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray, object]:
    ex = extract_surface(density, 0.0, target_faces=target)
    v, f, report = clean_mesh(ex.vertices, ex.faces)
    v, f = decimate(v, f, target)
    v, f, _ = clean_mesh(v, f, min_component_fraction=0.0)
    return v, orient_outward(v, f), report


@pytest.fixture(scope="session")
def surface_mesh() -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, object]]:
    """surface_mesh(density, target_faces) -> (vertices (V, 3), faces (F, 3), first clean-up report): the
    field_to_glb steps before the UVs (extract at threshold 0, clean, decimate, clean, orient outward)."""
    return _surface_mesh


def _check_uv_mesh(uvm, v: np.ndarray, f: np.ndarray, size: int) -> None:
    # every face charted once, no unused UV vertex
    assert len(uvm.faces) == len(f) and np.unique(uvm.faces).size == len(uvm.uvs)
    assert np.array_equal(np.sort(np.sort(uvm.vmap[uvm.faces], axis=1), axis=0), np.sort(np.sort(f, axis=1), axis=0))
    assert np.isfinite(uvm.uvs).all() and uvm.uvs.min() >= 0.0 and uvm.uvs.max() <= 1.0
    t = uvm.uvs[uvm.faces].astype(np.float64)
    area = 0.5 * np.abs(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]))
    assert (area > 0).all()
    assert overlap_texels(uvm.uvs, uvm.faces, size) == 0
    assert not folded_faces(uvm.uvs, uvm.faces).any()
    assert np.array_equal(uvm.vertices, v[uvm.vmap])  # the UV mesh keeps the surface's positions


@pytest.fixture(scope="session")
def check_uv_mesh() -> Callable[..., None]:
    """check_uv_mesh(uv_mesh, vertices, faces, texture_size): every face charted once, UVs in [0, 1], positive
    area, no overlapping texels or folds at that texture size, positions kept."""
    return _check_uv_mesh


def _read_glb(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    magic, version, total = struct.unpack("<4sII", data[:12])
    assert (magic, version, total) == (b"glTF", 2, len(data))
    n = struct.unpack("<I", data[12:16])[0]
    return json.loads(data[20:20 + n]), data[20 + n + 8:]


@pytest.fixture(scope="session")
def read_glb() -> Callable[[Path], tuple[dict, bytes]]:
    """read_glb(path) -> (the glTF JSON document, the binary chunk); asserts the GLB header."""
    return _read_glb
