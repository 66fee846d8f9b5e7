"""Per-texel baking: rasterise the UV triangles, colour each texel from its 3D surface point.

The rasteriser is vectorised numpy: every triangle enumerates the texels of its (slightly
grown) bounding box in one flat array, barycentrics decide membership. Texels whose centre
lies inside a triangle are "inside"; texels within ``margin`` texels of a triangle's edge
are coloured from the nearest point of that triangle (so bilinear taps across chart borders
read the right colour, not just a dilated copy); every other texel is filled from the
nearest coloured texel (seam dilation, which also keeps mipmaps from bleeding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.ndimage import distance_transform_edt

from orbitmesh.errors import InputError

ColorFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Raster:
    """Which triangle covers each texel and where.

    texel (T,) int32 flat index row * size + col, face (T,) int32, bary (T, 3) float32
    (clamped onto the triangle), inside (T,) bool (centre strictly in the triangle).
    """

    size: int
    texel: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    inside: np.ndarray

    @property
    def coverage(self) -> float:
        """Fraction of texels whose centre lies inside a triangle."""
        return float(np.count_nonzero(self.inside)) / (self.size * self.size)


def _edge_coefficients(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per triangle (M, 3, 2) -> a, b, c (M, 3) with d_i(x, y) = a_i x + b_i y + c_i the signed
    distance (texels, positive inside) from the edge opposite vertex i, and the (M,) |2 * area|."""
    v0, v1, v2 = p[:, 0], p[:, 1], p[:, 2]
    area2 = (v1[:, 0] - v0[:, 0]) * (v2[:, 1] - v0[:, 1]) - (v1[:, 1] - v0[:, 1]) * (v2[:, 0] - v0[:, 0])
    sign = np.where(area2 < 0, -1.0, 1.0)
    a, b, c = (np.empty((len(p), 3)) for _ in range(3))
    for i, (s, e) in enumerate(((v1, v2), (v2, v0), (v0, v1))):
        ex, ey = e[:, 0] - s[:, 0], e[:, 1] - s[:, 1]
        inv = sign / np.maximum(np.hypot(ex, ey), 1e-12)
        a[:, i], b[:, i] = -ey * inv, ex * inv
        c[:, i] = (ey * s[:, 0] - ex * s[:, 1]) * inv
    return a, b, c, np.abs(area2)


def border_faces(faces: np.ndarray) -> np.ndarray:
    """(M,) bool: faces touching a UV chart border (a vertex on an edge no other face shares)."""
    if len(faces) == 0:
        return np.zeros(0, bool)
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1).astype(np.int64)
    key = e[:, 0] * (int(faces.max()) + 1) + e[:, 1]
    uniq, counts = np.unique(key, return_counts=True)
    border_v = np.zeros(int(faces.max()) + 1, bool)
    once = uniq[counts == 1]
    border_v[once // (int(faces.max()) + 1)] = True
    border_v[once % (int(faces.max()) + 1)] = True
    return border_v[faces].any(axis=1)


def _round_up(n: np.ndarray) -> np.ndarray:
    """Round sizes > 8 up to 4 steps per octave (8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ...)."""
    n = np.asarray(n, np.int64)
    step = np.left_shift(1, np.maximum(np.floor(np.log2(np.maximum(n, 1))).astype(np.int64) - 2, 0))
    return np.where(n <= 8, n, -(-n // step) * step)


def _candidates(uvs: np.ndarray, faces: np.ndarray, size: int, margin: float | np.ndarray):
    """Every (texel, triangle) pair within ``margin`` texels of the triangle.

    ``margin`` is a scalar or (M,) per triangle (only chart-border triangles need one).
    Returns p (M, 3, 2) texel-space corners and flat arrays texel (T,) int32, face (T,) int32,
    d (T, 3) float32 edge distances and score (T,) float32 = min(d) (>= 0: centre inside).
    Triangles are bucketed by bounding-box size so each bucket is one broadcast (F, 3, H, W)
    evaluation of the three edge functions.
    """
    p = uvs[faces].astype(np.float64) * size - 0.5  # (M, 3, 2); texel centres at integers
    a, b, c, area2 = _edge_coefficients(p)
    valid = np.flatnonzero(area2 > 1e-12)
    m = np.broadcast_to(np.asarray(margin, np.float64), (len(p),))[:, None]
    lo = np.clip(np.floor(p.min(axis=1) - m), 0, size - 1).astype(np.int64)[valid]
    hi = np.clip(np.ceil(p.max(axis=1) + m), 0, size - 1).astype(np.int64)[valid]
    m = m[valid, 0].astype(np.float32)
    # bucket sizes rounded up to 4 steps per octave: few buckets (Python loop) for little waste
    wh = _round_up(hi - lo + 1)
    key = wh[:, 1] * (2 * size + 1) + wh[:, 0]
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    texels, facez, ds, scores = [], [], [], []
    for grp in np.split(order, bounds) if len(order) else []:
        w, h = int(wh[grp[0], 0]), int(wh[grp[0], 1])
        f = valid[grp]
        ox, oy = lo[grp, 0].astype(np.float64), lo[grp, 1].astype(np.float64)
        af, bf = a[f].astype(np.float32), b[f].astype(np.float32)
        base = (a[f] * ox[:, None] + b[f] * oy[:, None] + c[f]).astype(np.float32)
        dx = np.arange(w, dtype=np.float32)[None, None, :, None]
        dy = np.arange(h, dtype=np.float32)[None, :, None, None]
        d = base[:, None, None, :] + af[:, None, None, :] * dx + bf[:, None, None, :] * dy  # (F, H, W, 3)
        score = np.minimum(np.minimum(d[..., 0], d[..., 1]), d[..., 2])
        keep = score >= -m[grp][:, None, None]
        if w > 8 or h > 8:  # rounded-up boxes may reach past the texture's edge
            keep &= (lo[grp, 0][:, None, None] + np.arange(w)[None, None, :] < size) \
                & (lo[grp, 1][:, None, None] + np.arange(h)[None, :, None] < size)
        fi, yi, xi = np.nonzero(keep)
        texels.append(((lo[grp[fi], 1] + yi) * size + lo[grp[fi], 0] + xi).astype(np.int32))  # size <= 8192
        facez.append(f[fi].astype(np.int32))
        ds.append(d[fi, yi, xi])
        scores.append(score[fi, yi, xi])
    if not texels:
        z = np.zeros(0, np.int32)
        return p, z, z, np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
    return p, np.concatenate(texels), np.concatenate(facez), np.concatenate(ds), np.concatenate(scores)


def overlap_texels(uvs: np.ndarray, faces: np.ndarray, size: int, *, eps: float = 1e-2) -> int:
    """Texels whose centre lies more than ``eps`` texels inside two or more triangles.

    Neighbouring triangles only share edges, so any count above 0 means overlapping UVs.
    """
    _, texel, _, _, score = _candidates(uvs, faces, size, 0.0)
    counts = np.bincount(texel[score > eps], minlength=size * size)
    return int((counts > 1).sum())


def rasterize(uvs: np.ndarray, faces: np.ndarray, size: int, *, margin: float = 1.0) -> Raster:
    """Rasterise (K, 2) uvs / (M, 3) faces into a size x size texture (v = row / size).

    Each texel keeps the triangle that contains its centre, else the nearest one within
    ``margin`` texels.
    """
    p, texel, face, d, score = _candidates(uvs, faces, size, np.where(border_faces(faces), margin, 0.0))
    inside = score >= 0.0
    # inside texels: ties only on shared edges, where both triangles give the same point
    owner = np.full(size * size, -1, np.int32 if len(texel) < 2 ** 31 else np.int64)
    idx_in = np.flatnonzero(inside)
    owner[texel[idx_in]] = idx_in
    keep_in = idx_in[owner[texel[idx_in]] == idx_in]
    # margin texels not inside any triangle: the closest triangle wins
    idx_m = np.flatnonzero(~inside & (owner[texel] < 0))
    idx_m = idx_m[np.argsort(-score[idx_m], kind="stable")]
    _, first = np.unique(texel[idx_m], return_index=True)
    keep = np.concatenate([keep_in, idx_m[first]])
    # barycentrics from edge distances: w_i = d_i * |e_i| / |2A|; clamp onto the triangle
    fk = face[keep]
    edge = np.linalg.norm(p[:, [2, 0, 1]] - p[:, [1, 2, 0]], axis=2)  # (M, 3) edge opposite each vertex
    bary = np.clip(d[keep], 0.0, None) * edge.astype(np.float32)[fk]
    s = bary.sum(axis=1, keepdims=True)
    bary = np.where(s > 0, bary / np.maximum(s, 1e-30), np.float32(1.0 / 3.0)).astype(np.float32)
    return Raster(size, texel[keep], fk, bary, np.arange(len(keep)) < len(keep_in))


def eval_color_fn(color_fn: ColorFn, points: np.ndarray, chunk: int = 262_144) -> np.ndarray:
    """color_fn over (N, 3) points in chunks -> (N, 3) float32 clipped to [0, 1].

    Raises InputError when it returns the wrong shape or NaN/inf."""
    out = np.empty((len(points), 3), np.float32)
    for s in range(0, len(points), chunk):
        pts = points[s:s + chunk]
        col = np.asarray(color_fn(pts), dtype=np.float32)
        if col.shape != (len(pts), 3):
            raise InputError(f"color_fn returned shape {col.shape} for {len(pts)} points; expected "
                             f"({len(pts)}, 3)", fix="return one RGB triple in [0, 1] per input point")
        if not np.isfinite(col).all():
            raise InputError(f"color_fn returned {int((~np.isfinite(col)).sum())} NaN/inf values",
                             fix="return finite RGB values in [0, 1]")
        out[s:s + chunk] = col
    return np.clip(out, 0.0, 1.0)


def check_color_fn(color_fn: ColorFn) -> None:
    """Fail fast on a colour function with the wrong output, before any expensive step."""
    if not callable(color_fn):
        raise InputError(f"color_fn must be callable, got {type(color_fn).__name__}",
                         fix="pass a function (N, 3) float32 points -> (N, 3) colours in [0, 1]")
    eval_color_fn(color_fn, np.zeros((4, 3), np.float32), 4)


def dilate(image: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Fill every texel outside ``filled`` (H, W) bool from the nearest filled texel."""
    if filled.all() or not filled.any():
        return image
    iy, ix = distance_transform_edt(~filled, return_distances=False, return_indices=True)
    return image[iy, ix]


def bake_texture(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, color_fn: ColorFn,
                 size: int = 1024, *, margin: float = 1.0, chunk: int = 262_144,
                 adjust: Callable[[Raster, np.ndarray, np.ndarray], np.ndarray] | None = None,
                 replaced: Callable[[Raster, np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, Raster]:
    """Bake ``color_fn`` at each texel's 3D surface point.

    vertices (K, 3) float32 (the space color_fn expects), faces (M, 3), uvs (K, 2) in [0, 1].
    ``adjust(raster, points (T, 3), colours (T, 3) float32)`` -> (T, 3) colours in [0, 1] may change the
    baked colours before they are written and the seams dilated (fast mode paints the input photo);
    ``replaced(raster, points)`` -> (T,) bool: the texels whose colour ``adjust`` replaces outright, where
    ``color_fn`` is then not evaluated (their colours reach ``adjust`` as 0).
    Returns the (size, size, 3) uint8 sRGB image (row 0 = v 0) and the Raster.
    """
    r = rasterize(uvs, faces, size, margin=margin)
    tri = vertices[faces[r.face]].astype(np.float32)  # (T, 3, 3)
    points = np.einsum("tk,tkd->td", r.bary, tri)
    skip = None if replaced is None or adjust is None else np.asarray(replaced(r, points), bool)
    if skip is None or not skip.any():
        colors = eval_color_fn(color_fn, points, chunk)
    else:
        colors = np.zeros((len(points), 3), np.float32)
        colors[~skip] = eval_color_fn(color_fn, points[~skip], chunk)
    if adjust is not None:
        colors = np.clip(np.asarray(adjust(r, points, colors), np.float32).reshape(len(points), 3), 0.0, 1.0)
    image = np.zeros((size * size, 3), np.uint8)
    image[r.texel] = np.round(colors * 255.0).astype(np.uint8)
    filled = np.zeros(size * size, bool)
    filled[r.texel] = True
    image = dilate(image.reshape(size, size, 3), filled.reshape(size, size))
    return image, r
