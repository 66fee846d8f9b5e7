"""Last-resort UV repair: triangles xatlas left overlapping get their own charts, packed by us.

xatlas occasionally leaves fans that wrap over themselves, and re-charting those faces can fold
another fan elsewhere, deterministically on some meshes. Instead of failing the job, the faces
still overlapping are cut out of their charts and each is placed, shape preserved, in its own
free block of the atlas (blocks that no other face's padded bounding box touches; the atlas is
shrunk to make room when it is full). When even that cannot be done, :func:`grid_atlas` gives
every triangle its own grid cell: a poor but overlap-free atlas. Placed triangles are disjoint
by construction (separate blocks, inset by the padding), so the "no overlapping UVs" guarantee
holds without trusting xatlas.
"""

from __future__ import annotations

import numpy as np

from orbitmesh.mesh.bake import _candidates

SHRINK_STEPS = (1.0, 0.94, 0.88, 0.8, 0.7, 0.6, 0.5)  # atlas scales tried to free blocks for moved faces
MAX_BLOCK_FRACTION = 8  # a moved triangle's block is at most 1/8 of the texture's side
MIN_ASPECT = 0.05  # slivers get at least this height / width in UV space (a usable area)


def overlapping_faces(uvs: np.ndarray, faces: np.ndarray, size: int, eps: float = 1e-2) -> np.ndarray:
    """(M,) bool: faces covering a texel centre (more than ``eps`` texels inside) that another face
    also covers, in a ``size`` x ``size`` texture. Same criterion as ``bake.overlap_texels``."""
    _, texel, face, _, score = _candidates(uvs, faces, size, 0.0)
    keep = score > eps
    texel, face = texel[keep], face[keep]
    counts = np.bincount(texel, minlength=size * size)
    bad = np.zeros(len(faces), bool)
    bad[face[counts[texel] > 1]] = True
    return bad


def place_triangles(tri: np.ndarray, origins: np.ndarray, width: float | np.ndarray,
                    flip: bool = False) -> np.ndarray:
    """Lay (k, 3, 3) world triangles flat, shape preserved, each inside its square.

    origins (k, 2) float64 lower corners and ``width`` the squares' side (texel units). The
    longest edge lies along u, so the triangle spans at most ``width`` x ``width``. ``flip``
    mirrors v (to match the atlas's winding). Returns (k, 3, 2) float64 corners, same corner order.
    """
    tri = np.asarray(tri, np.float64)
    k = len(tri)
    edges = np.linalg.norm(tri[:, [1, 2, 0]] - tri, axis=2)  # edge i runs corner i -> i+1
    j = np.argmax(edges, axis=1)
    rows = np.arange(k)
    a, b, o = tri[rows, j], tri[rows, (j + 1) % 3], tri[rows, (j + 2) % 3]
    length = edges[rows, j]
    ok = length > 1e-12
    x = (b - a) / np.where(ok, length, 1.0)[:, None]
    t = np.einsum("kd,kd->k", o - a, x)
    h = np.linalg.norm(o - a - t[:, None] * x, axis=1)
    # degenerate (all corners in one point): a right triangle; slivers get a minimum height
    length = np.where(ok, length, 1.0)
    t = np.where(ok, np.clip(t, 0.0, length), 0.0)
    h = np.where(ok, np.maximum(h, MIN_ASPECT * length), 1.0)
    s = np.broadcast_to(np.asarray(width, np.float64), (k,)) / length
    local = np.zeros((k, 3, 2))
    local[:, 1, 0] = length * s
    local[:, 2, 0], local[:, 2, 1] = t * s, h * s
    if flip:
        local[:, :, 1] = (h * s)[:, None] - local[:, :, 1]
    out = np.empty((k, 3, 2))
    for corner in range(3):  # local corner c sits at triangle corner (j + c) % 3
        out[rows, (j + corner) % 3] = local[:, corner]
    return out + origins[:, None, :]


def free_blocks(uvs: np.ndarray, faces: np.ndarray, size: int, block: int, padding: int) -> np.ndarray:
    """(n, 2) int64 texel origins (u, v) of ``block``-sized grid blocks that no face's bounding box,
    grown by ``padding`` texels, touches; row-major order (deterministic)."""
    n = size // block
    if n == 0:
        return np.zeros((0, 2), np.int64)
    p = uvs[faces] * size  # (M, 3, 2) texel units
    lo = np.clip((np.floor(p.min(axis=1)) - padding) // block, 0, n).astype(np.int64)
    hi = np.clip((np.ceil(p.max(axis=1)) + padding) // block, 0, n - 1).astype(np.int64)
    diff = np.zeros((n + 1, n + 1), np.int64)  # 2D difference array over blocks (index v, u)
    np.add.at(diff, (lo[:, 1], lo[:, 0]), 1)
    np.add.at(diff, (lo[:, 1], hi[:, 0] + 1), -1)
    np.add.at(diff, (hi[:, 1] + 1, lo[:, 0]), -1)
    np.add.at(diff, (hi[:, 1] + 1, hi[:, 0] + 1), 1)
    occupied = diff.cumsum(axis=0).cumsum(axis=1)[:n, :n] > 0
    bv, bu = np.nonzero(~occupied)
    return np.stack([bu, bv], axis=1) * block


def _winding_flip(uvs: np.ndarray, faces: np.ndarray) -> bool:
    """Whether most faces have negative signed UV area (so placed triangles should too)."""
    if len(faces) == 0:
        return False
    t = uvs[faces].astype(np.float64)
    d1, d2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    return bool(np.count_nonzero(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] < 0) * 2 > len(faces))


def _texel_density(vertices: np.ndarray, uvs: np.ndarray, faces: np.ndarray, size: int) -> float:
    """Texels per world unit of the charted faces (sqrt of the UV / surface area ratio)."""
    w, t = vertices[faces].astype(np.float64), uvs[faces].astype(np.float64) * size
    a3 = np.linalg.norm(np.cross(w[:, 1] - w[:, 0], w[:, 2] - w[:, 0]), axis=1).sum()
    d1, d2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    a2 = np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]).sum()
    return float(np.sqrt(a2 / a3)) if a3 > 0 and a2 > 0 else 0.0


def move_apart(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, vmap: np.ndarray,
               bad: np.ndarray, size: int, padding: int):
    """Cut the ``bad`` faces out of their charts and give each its own free block.

    vertices (K, 3) world positions of the UV vertices, faces (M, 3), uvs (K, 2) in [0, 1],
    vmap (K,) source vertex per UV vertex, bad (M,) bool. Face order is kept. Returns new
    (faces (M, 3) int64, uvs (K', 2) float64, vmap (K',) int64) without unused UV vertices,
    or None when no atlas scale leaves enough free blocks.
    """
    bad_idx = np.flatnonzero(bad)
    good = faces[~bad]
    tri = vertices[faces[bad_idx]].astype(np.float64)
    # blocks sized to keep the moved triangles at about the atlas's texel density
    longest = np.linalg.norm(tri[:, [1, 2, 0]] - tri, axis=2).max()
    want = int(np.ceil(longest * _texel_density(vertices, uvs, good, size))) if len(good) else 0
    block = int(np.clip(want, 4, max(4, size // MAX_BLOCK_FRACTION))) + 2 * padding
    flip = _winding_flip(uvs, good)
    blocks = sorted({block, max(2 * padding + 3, block // 2)}, reverse=True)  # smaller blocks before more shrink
    for s, blk in ((s, b) for s in SHRINK_STEPS for b in blocks):
        scaled = uvs.astype(np.float64) * s  # shrinking towards (0, 0) frees the far side and bottom
        origins = free_blocks(scaled, good, size, blk, padding)
        if len(origins) >= len(bad_idx):
            block = blk
            break
    else:
        return None
    placed = place_triangles(tri, origins[:len(bad_idx)].astype(np.float64) + padding, block - 2 * padding, flip)
    new_faces = faces.astype(np.int64).copy()
    new_faces[bad_idx] = len(uvs) + np.arange(3 * len(bad_idx)).reshape(-1, 3)
    all_uvs = np.concatenate([scaled, placed.reshape(-1, 2) / size])
    all_vmap = np.concatenate([vmap, vmap[faces[bad_idx]].reshape(-1)])
    used, inverse = np.unique(new_faces, return_inverse=True)  # drop UV vertices only bad faces used
    return inverse.reshape(-1, 3), all_uvs[used], all_vmap[used]


def grid_atlas(vertices: np.ndarray, faces: np.ndarray, size: int, padding: int):
    """Every triangle in its own cell of a square grid: an atlas that cannot overlap.

    vertices (N, 3), faces (M, 3). Returns (faces (M, 3) int64, uvs (3M, 2) float64 in [0, 1],
    vmap (3M,) int64 source vertex per UV vertex).
    """
    m = len(faces)
    n = max(1, int(np.ceil(np.sqrt(m))))
    cell = size / n
    pad = min(float(padding), 0.15 * cell)  # tiny cells: padding gives way, disjointness does not
    i = np.arange(m)
    origins = np.stack([(i % n) * cell, (i // n) * cell], axis=1) + pad
    placed = place_triangles(vertices[faces], origins, cell - 2 * pad)
    return (np.arange(3 * m).reshape(-1, 3), np.clip(placed.reshape(-1, 2) / size, 0.0, 1.0),
            np.asarray(faces, np.int64).reshape(-1))
