"""Quadric edge-collapse decimation to a target face count.

fast-simplification (the Fast-Quadric-Mesh-Simplification decimator) is 10x faster than
pymeshlab's quadric edge collapse on the same input and lands on the exact target. When it
broke a closed surface, a gentler second pass of it usually does not; pymeshlab is the fallback
when that one broke it too, or when fast-simplification is not installed.

pymeshlab is imported only here, when the fallback is needed, and may be missing or unloadable:
Blender's full package bundles its Linux wheel, which needs glibc 2.35 while Blender runs from
glibc 2.28. Without it the fallback is off (a warning says so once) and fast-simplification's
result stands.
"""

from __future__ import annotations

import logging

import numpy as np

from orbitmesh.errors import OrbitMeshError

log = logging.getLogger(__name__)
FAST_AGGRESSIVENESS = 7.0  # fast-simplification's default
RETRY_AGGRESSIVENESS = 5.0  # a gentler pass when the first one pinched a closed surface (see decimate)
_PYMESHLAB_PROBLEM: list[str] = []  # why pymeshlab cannot load, once known


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float32, (M, 3) int32 -> decimated ((N', 3) float32, (M', 3) int32), M' ~ target_faces.

    Meshes already at or under the target are returned unchanged. Orientation is preserved.
    """
    if target_faces <= 0:
        raise ValueError(f"target_faces must be positive, got {target_faces}")
    if len(faces) <= target_faces:
        return vertices, faces
    try:
        import fast_simplification
    except ImportError:  # pragma: no cover - the fallback path when the package is missing
        if load_pymeshlab() is None:
            raise OrbitMeshError(f"no mesh decimator: fast-simplification is not installed and pymeshlab cannot load "
                                 f"({_PYMESHLAB_PROBLEM[0]})", fix='pip install "fast-simplification>=0.1.7"') from None
        return _decimate_pymeshlab(vertices, faces, target_faces)
    v, f = _decimate_fast(fast_simplification, vertices, faces, target_faces, FAST_AGGRESSIVENESS)
    bad = bad_edges(f)
    if bad and not bad_edges(faces):
        # it can pinch very high-genus (noisy) surfaces into non-manifold edges. Which collapse pinches
        # depends on its order: a gentler pass (another order) usually keeps the surface closed, at a tenth
        # of the fallback's time. Then pymeshlab's topology-preserving collapse: slower, but it keeps a
        # closed surface closed.
        v2, f2 = _decimate_fast(fast_simplification, vertices, faces, target_faces, RETRY_AGGRESSIVENESS)
        bad2 = bad_edges(f2)
        if bad2 < bad:
            v, f, bad = v2, f2, bad2
        if not bad:
            return v, f
        if load_pymeshlab() is None:
            log.warning("decimation left %d open or non-manifold edges on a closed surface; the pymeshlab fallback "
                        "that would repair them is off", bad)
            return v, f
        v2, f2 = _decimate_pymeshlab(vertices, faces, target_faces)
        if bad_edges(f2) < bad:
            return v2, f2
    return v, f


def _decimate_fast(fast_simplification, vertices: np.ndarray, faces: np.ndarray, target_faces: int,
                   aggressiveness: float) -> tuple[np.ndarray, np.ndarray]:
    v, f = fast_simplification.simplify(np.ascontiguousarray(vertices, np.float32),
                                         np.ascontiguousarray(faces, np.int32),
                                         target_reduction=1.0 - target_faces / len(faces), agg=aggressiveness)
    return v.astype(np.float32), f.astype(np.int32)


def load_pymeshlab():
    """The pymeshlab module, or None when it is missing or cannot load (its Linux wheel needs glibc 2.35: an
    older system raises ImportError). The first failure logs a warning with the reason and the fix."""
    if _PYMESHLAB_PROBLEM:
        return None
    try:
        import pymeshlab
    except (ImportError, OSError) as exc:
        _PYMESHLAB_PROBLEM.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        log.warning("pymeshlab cannot load (%s): mesh decimation runs without its pymeshlab fallback. Fix: on Linux "
                    "it needs glibc 2.35 or newer (`ldd --version`); or pip install \"pymeshlab>=2023.12\"",
                    _PYMESHLAB_PROBLEM[0])
        return None
    return pymeshlab


def bad_edges(faces: np.ndarray) -> int:
    """Edges not shared by exactly two faces (0 for a closed manifold surface)."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1).astype(np.int64)
    _, counts = np.unique(e[:, 0] * (int(e.max()) + 1) + e[:, 1], return_counts=True)
    return int((counts != 2).sum())


def _decimate_pymeshlab(vertices: np.ndarray, faces: np.ndarray, target_faces: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    pymeshlab = load_pymeshlab()
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertices.astype(np.float64), faces.astype(np.int32)))
    ms.meshing_decimation_quadric_edge_collapse(targetfacenum=int(target_faces), preservenormal=True,
                                                preservetopology=True, planarquadric=True)
    m = ms.current_mesh()
    return m.vertex_matrix().astype(np.float32), m.face_matrix().astype(np.int32)
