"""Mesh cleaning: degenerate and duplicate faces, floaters, orientation, normals (numpy + scipy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass
class CleanReport:
    degenerate_faces: int = 0
    duplicate_faces: int = 0
    components_kept: int = 0
    components_removed: int = 0
    faces_removed_in_components: int = 0
    flipped_components: int = 0


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(M,) float64 triangle areas."""
    v = vertices.astype(np.float64)
    return 0.5 * np.linalg.norm(np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]), axis=1)


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop unreferenced vertices; returns ((N', 3), (M, 3) int32)."""
    used = np.zeros(len(vertices), bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces].astype(np.int32)


def remove_degenerate_and_duplicates(vertices: np.ndarray, faces: np.ndarray, report: CleanReport
                                     ) -> np.ndarray:
    """Faces with a repeated vertex index or zero area, and faces repeating another's vertex set."""
    f = faces
    bad = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    bad |= face_areas(vertices, f) <= 1e-14
    report.degenerate_faces += int(bad.sum())
    f = f[~bad]
    s = np.sort(f, axis=1).astype(np.int64)
    n = int(s.max()) + 1 if len(s) else 1
    # one int64 key per vertex set sorts much faster than np.unique(axis=0) on rows
    key = (s[:, 0] * n + s[:, 1]) * n + s[:, 2] if n < 2_000_000 else s
    _, first = np.unique(key, axis=0 if key.ndim == 2 else None, return_index=True)
    report.duplicate_faces += len(f) - len(first)
    return f[np.sort(first)]


def face_components(faces: np.ndarray, n_vertices: int) -> tuple[int, np.ndarray]:
    """Connected components through shared vertices: (count, (M,) component label per face)."""
    a = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    b = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n_vertices, n_vertices))
    n, labels = connected_components(graph, directed=False)
    return n, labels[faces[:, 0]]


def remove_floaters(faces: np.ndarray, n_vertices: int, min_fraction: float, report: CleanReport
                    ) -> np.ndarray:
    """Keep components holding at least ``min_fraction`` of the faces (the largest always stays)."""
    n, comp = face_components(faces, n_vertices)
    sizes = np.bincount(comp, minlength=n)
    keep = sizes >= min_fraction * len(faces)
    keep[np.argmax(sizes)] = True
    keep &= sizes > 0
    report.components_kept = int(keep.sum())
    report.components_removed = int((~keep & (sizes > 0)).sum())
    mask = keep[comp]
    report.faces_removed_in_components = int((~mask).sum())
    return faces[mask]


def orient_outward(vertices: np.ndarray, faces: np.ndarray, report: CleanReport | None = None) -> np.ndarray:
    """Flip every component whose signed volume is negative so its normals point outward."""
    n, comp = face_components(faces, len(vertices))
    v = vertices.astype(np.float64)
    vol6 = np.einsum("ij,ij->i", v[faces[:, 0]], np.cross(v[faces[:, 1]], v[faces[:, 2]]))
    flip = np.bincount(comp, weights=vol6, minlength=n) < 0
    if report is not None:
        report.flipped_components = int(flip.sum())
    out = faces.copy()
    rows = flip[comp]
    out[rows] = out[rows][:, ::-1]
    return out


def clean_mesh(vertices: np.ndarray, faces: np.ndarray, *, min_component_fraction: float = 0.01
               ) -> tuple[np.ndarray, np.ndarray, CleanReport]:
    """Degenerate/duplicate faces, floaters (components under ``min_component_fraction`` of the
    faces), unreferenced vertices. (N, 3) float32, (M, 3) int32 in; same out plus a report."""
    report = CleanReport()
    f = remove_degenerate_and_duplicates(vertices, np.asarray(faces, np.int64), report)
    f = remove_floaters(f, len(vertices), min_component_fraction, report)
    v, f = compact(vertices, f)
    return v, f, report


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N, 3) float32 unit normals: area-weighted sums of the adjacent faces' normals."""
    v = vertices.astype(np.float64)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])  # length = 2 * area
    n = np.stack([sum(np.bincount(faces[:, k], fn[:, c], minlength=len(v)) for k in range(3))
                  for c in range(3)], axis=1)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 1e-20, n / np.maximum(length, 1e-20), np.array([0.0, 0.0, 1.0]))
    return n.astype(np.float32)
