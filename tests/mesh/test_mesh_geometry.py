"""Mesh stage geometry: watertight, floaters removed, face budget, outward normals, valid UVs."""

from __future__ import annotations

import numpy as np
import pytest

from orbitmesh.mesh import extract_surface, overlap_texels, unwrap_uv, vertex_normals
from orbitmesh.mesh.demo import sphere_torus_field

R = 96
TARGET = 4000


def torus_field(res: int = R) -> np.ndarray:
    ax = np.linspace(-1, 1, res, dtype=np.float32)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    q = np.sqrt(x * x + y * y) - 0.55
    return (0.2 - np.sqrt(q * q + z * z)).astype(np.float32)


def two_spheres_with_floater(sphere_field) -> np.ndarray:
    a = sphere_field((-0.45, 0, 0), 0.35, R)
    b = sphere_field((0.45, 0, 0), 0.35, R)
    floater = sphere_field((0.0, 0.7, 0.7), 0.045, R)  # ~0.8% of the big spheres' area
    return np.maximum(np.maximum(a, b), floater)


def edge_use(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(undirected edge use counts, directed edge use counts)."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = int(faces.max()) + 1
    d = directed[:, 0].astype(np.int64) * n + directed[:, 1]
    u = np.sort(directed, axis=1)
    u = u[:, 0].astype(np.int64) * n + u[:, 1]
    return np.unique(u, return_counts=True)[1], np.unique(d, return_counts=True)[1]


def n_components(faces: np.ndarray, n_vertices: int) -> int:
    from orbitmesh.mesh.clean import face_components

    return face_components(faces, n_vertices)[0]


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    v = v.astype(np.float64)
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


# case -> (field from the sphere_field fixture, analytic volume, connected components)
CASES = {
    "sphere": (lambda sphere_field: sphere_field(res=R), 4 / 3 * np.pi * 0.6 ** 3, 1),
    "torus": (lambda sphere_field: torus_field(), 2 * np.pi ** 2 * 0.55 * 0.2 ** 2, 1),
    "two_spheres_floater": (two_spheres_with_floater, 2 * 4 / 3 * np.pi * 0.35 ** 3, 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_closed_fields_give_watertight_budgeted_uv_meshes(case, sphere_field, surface_mesh, check_uv_mesh):
    make, volume, components = CASES[case]
    v, f, report = surface_mesh(make(sphere_field), TARGET)
    # face budget
    assert abs(len(f) - TARGET) <= 0.05 * TARGET
    # watertight and consistently oriented: every edge used by exactly two faces, once each way
    undirected, directed = edge_use(f)
    assert (undirected == 2).all() and (directed == 1).all()
    # outward: positive volume matching the analytic shape
    assert signed_volume(v, f) == pytest.approx(volume, rel=0.03)
    # floaters removed, real components kept
    assert n_components(f, len(v)) == components
    if case == "two_spheres_floater":
        assert report.components_removed == 1
    # every face has UVs, inside [0, 1], no overlapping UV triangles, the surface's positions kept
    check_uv_mesh(unwrap_uv(v, f, texture_size=512), v, f, 2048)


def test_overlap_check_catches_overlapping_uvs():
    uvs = np.array([[0.1, 0.1], [0.6, 0.1], [0.1, 0.6], [0.2, 0.2], [0.7, 0.2], [0.2, 0.7]], np.float32)
    assert overlap_texels(uvs, np.array([[0, 1, 2], [3, 4, 5]]), 64) > 50
    assert overlap_texels(uvs, np.array([[0, 1, 2]]), 64) == 0


def test_vertex_normals_point_outward_on_a_sphere(sphere_field, surface_mesh):
    v, f, _ = surface_mesh(sphere_field(res=R), TARGET)
    n = vertex_normals(v, f)
    radial = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert np.einsum("ij,ij->i", n, radial).min() > 0.95


def test_coarse_to_fine_extraction_lands_on_the_fine_surface():
    density = sphere_torus_field(256)
    ex = extract_surface(density, 0.0, target_faces=20000)
    assert ex.stride == 2  # coarse grid chosen from the face budget...
    from orbitmesh.mesh.demo import sphere_torus_sdf

    err = np.abs(sphere_torus_sdf(ex.vertices))
    # ...but vertices sit on the true surface: well under the coarse cell (2 * 2/255 = 0.0157)
    assert err.mean() < 5e-4 and err.max() < 4e-3
    full = extract_surface(density, 0.0, stride=1)
    assert len(full.faces) > 3 * len(ex.faces)


def test_folded_uv_fans_are_detected():
    from orbitmesh.mesh.uv import folded_faces

    # a fan of 5 triangles around one vertex, 80 degrees each: 400 degrees, so it wraps over itself
    ang = np.deg2rad(np.arange(6) * 80.0)
    uvs = np.concatenate([[[0.2, 0.2]], 0.2 + 0.1 * np.stack([np.cos(ang), np.sin(ang)], axis=1)]).astype(np.float32)
    faces = np.array([[0, i, i + 1] for i in range(1, 6)], np.int32)
    # plus an ordinary two-triangle chart
    uvs = np.concatenate([uvs, [[0.5, 0.5], [0.9, 0.5], [0.5, 0.9], [0.9, 0.9]]]).astype(np.float32)
    faces = np.concatenate([faces, [[7, 8, 9], [8, 10, 9]]]).astype(np.int32)
    assert overlap_texels(uvs, faces, 256) > 0
    assert folded_faces(uvs, faces).tolist() == [True] * 5 + [False] * 2
    assert overlap_texels(uvs, faces[4:], 256) == 0  # without the wrap-around triangles: no overlap
