"""A vectorised triangle rasteriser into a pinhole view (torch; CPU or GPU).

Every triangle enumerates the pixels of its screen bounding box in one flat batch
(triangles are bucketed by rounded box size, so each bucket is one broadcast
``(F, H, W)`` evaluation of the edge functions); a pixel centre belongs to a triangle when
its three barycentrics are >= 0. The depth test is a scatter-min of view depth per pixel.
Barycentrics are perspective-correct. Triangles with a vertex behind the near plane are
dropped (orbit cameras never get that close).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from orbitmesh.quality.cameras import Camera

NEAR = 1e-3
MAX_BATCH = 1 << 22  # candidate pixels evaluated at once (memory: ~10 floats each)


@dataclass
class ViewRaster:
    """What the camera sees. ``depth`` (S, S) float32 distance along the view axis (inf: nothing),
    ``face`` (S, S) int64 (-1: nothing), ``bary`` (S, S, 3) float32 perspective-correct."""

    depth: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.face >= 0


def project_points(points: torch.Tensor, camera: Camera, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) world points -> (N, 2) continuous pixel coords (x = column, y = row; integers at pixel
    centres) and (N,) view depth (> 0 in front of the camera)."""
    c2w = torch.as_tensor(camera.c2w, dtype=torch.float32, device=points.device)
    cam = (points.float() - c2w[:, 3]) @ c2w[:, :3]  # (x right, y up, z backward)
    depth = -cam[:, 2]
    fx, fy, cx, cy = camera.intrinsics
    d = depth.clamp(min=NEAR)
    u = cx + fx * cam[:, 0] / d
    v = cy - fy * cam[:, 1] / d
    return torch.stack([u * size - 0.5, v * size - 0.5], dim=-1), depth


def _size_class(n: torch.Tensor) -> torch.Tensor:
    """Round box sizes up to 1, 2, 3, 4, 6, 8, 12, 16, ... so few buckets cover every triangle."""
    n = n.clamp(min=1).float()
    p = torch.exp2(torch.floor(torch.log2(n)))
    up = torch.where(n <= p, p, torch.where(n <= 1.5 * p, 1.5 * p, 2 * p))
    return torch.ceil(up).long()


def _as_tensors(vertices, faces, device) -> tuple[torch.Tensor, torch.Tensor]:
    device = torch.device(device) if device is not None else (
        vertices.device if isinstance(vertices, torch.Tensor) else torch.device("cpu"))
    v = vertices if isinstance(vertices, torch.Tensor) else torch.from_numpy(np.asarray(vertices, np.float32))
    f = faces if isinstance(faces, torch.Tensor) else torch.from_numpy(np.asarray(faces, np.int64))
    return v.to(device=device, dtype=torch.float32), f.to(device=device, dtype=torch.long)


def _candidates(tri: torch.Tensor, tz: torch.Tensor, size: int, offset: torch.Tensor, with_bary: bool):
    """Pixels covered by screen triangles. tri (K, 3, 2) pixel coords, tz (K, 3) view depths,
    offset (K,) added to each triangle's flat pixel index (several views in one buffer).
    Returns the triangle index (T,), flat pixel (T,), and when ``with_bary`` depth (T,) and
    perspective-correct barycentrics (T, 3)."""
    device = tri.device
    xs, ys = tri[..., 0], tri[..., 1]  # (K, 3)
    area2 = (xs[:, 1] - xs[:, 0]) * (ys[:, 2] - ys[:, 0]) - (ys[:, 1] - ys[:, 0]) * (xs[:, 2] - xs[:, 0])
    safe = torch.where(area2.abs() > 1e-12, area2, torch.ones_like(area2))
    # barycentric l_i(x, y) = a_i x + b_i y + c_i: the edge function opposite vertex i / (2 * area)
    coef = []
    for i, j in ((1, 2), (2, 0), (0, 1)):
        a = -(ys[:, j] - ys[:, i]) / safe
        b = (xs[:, j] - xs[:, i]) / safe
        # relative to vertex 0: small numbers, no cancellation on thin (edge-on) triangles
        coef.append((a, b, -(a * (xs[:, i] - xs[:, 0]) + b * (ys[:, i] - ys[:, 0]))))
    xmin = torch.minimum(torch.minimum(xs[:, 0], xs[:, 1]), xs[:, 2])
    xmax = torch.maximum(torch.maximum(xs[:, 0], xs[:, 1]), xs[:, 2])
    ymin = torch.minimum(torch.minimum(ys[:, 0], ys[:, 1]), ys[:, 2])
    ymax = torch.maximum(torch.maximum(ys[:, 0], ys[:, 1]), ys[:, 2])
    lo_x, hi_x = torch.ceil(xmin).clamp(0, size - 1), torch.floor(xmax).clamp(0, size - 1)
    lo_y, hi_y = torch.ceil(ymin).clamp(0, size - 1), torch.floor(ymax).clamp(0, size - 1)
    front = (tz[:, 0] > NEAR) & (tz[:, 1] > NEAR) & (tz[:, 2] > NEAR)
    ok = (front & (area2.abs() > 1e-12) & (xmax >= 0) & (ymax >= 0) & (xmin <= size - 1) & (ymin <= size - 1)
          & (hi_x >= lo_x) & (hi_y >= lo_y))
    idx = torch.nonzero(ok).squeeze(1)
    out_t, out_p, out_z, out_b = [], [], [], []
    if len(idx):
        lo = torch.stack([lo_x[idx], lo_y[idx]], 1).long()
        wh = _size_class(torch.stack([hi_x[idx], hi_y[idx]], 1).long() - lo + 1)  # (K', 2)
        key = wh[:, 0] * 100_003 + wh[:, 1]
        for k in torch.unique(key).tolist():
            sel = key == k
            grp, glo = idx[sel], lo[sel]
            w, h = int(wh[sel][0, 0]), int(wh[sel][0, 1])
            step = max(1, MAX_BATCH // (w * h))
            for s in range(0, len(grp), step):
                g, o = grp[s:s + step], glo[s:s + step]
                px = o[:, 0, None, None] + torch.arange(w, device=device)[None, None, :]  # (F, 1, W)
                py = o[:, 1, None, None] + torch.arange(h, device=device)[None, :, None]  # (F, H, 1)
                pxf = px.float() - xs[g, 0, None, None]
                pyf = py.float() - ys[g, 0, None, None]
                lam = [(a[g, None, None] * pxf + c[g, None, None]) + b[g, None, None] * pyf for a, b, c in coef]
                inside = (lam[0] >= -1e-6) & (lam[1] >= -1e-6) & (lam[2] >= -1e-6) & (px < size) & (py < size)
                fi, yi_, xi_ = torch.nonzero(inside, as_tuple=True)
                if len(fi) == 0:
                    continue
                out_t.append(g[fi])
                out_p.append(py[fi, yi_, 0] * size + px[fi, 0, xi_] + offset[g[fi]])
                if with_bary:
                    bary = torch.stack([x[fi, yi_, xi_] for x in lam], dim=-1)  # (T, 3)
                    inv_z = 1.0 / tz[g[fi]]
                    wsum = (bary * inv_z).sum(dim=-1)
                    out_z.append(1.0 / wsum)
                    out_b.append(bary * inv_z / wsum[:, None])
    empty = torch.zeros(0, dtype=torch.long, device=device)
    cat = (lambda xs, e: torch.cat(xs) if xs else e)
    return (cat(out_t, empty), cat(out_p, empty), cat(out_z, torch.zeros(0, device=device)),
            cat(out_b, torch.zeros((0, 3), device=device)))


def rasterize(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, camera: Camera,
              size: int, *, device: str | torch.device | None = None) -> ViewRaster:
    """Rasterise (N, 3) vertices / (M, 3) faces into a ``size`` x ``size`` view of ``camera``."""
    v, f = _as_tensors(vertices, faces, device)
    dev = v.device
    s2 = size * size
    zbuf = torch.full((s2,), float("inf"), device=dev)
    face_buf = torch.full((s2,), -1, dtype=torch.long, device=dev)
    bary_buf = torch.zeros((s2, 3), device=dev)
    if len(f):
        xy, depth = project_points(v, camera, size)
        fid, pix, z, bary = _candidates(xy[f], depth[f], size, torch.zeros(len(f), dtype=torch.long, device=dev), True)
        if len(fid):
            zbuf.scatter_reduce_(0, pix, z, reduce="amin")
            win = z <= zbuf[pix]
            pix, fid, bary = pix[win], fid[win], bary[win]
            face_buf.scatter_reduce_(0, pix, fid, reduce="amax")  # exact depth ties: the higher face id
            keep = face_buf[pix] == fid
            bary_buf[pix[keep]] = bary[keep]
    return ViewRaster(zbuf.view(size, size), face_buf.view(size, size), bary_buf.view(size, size, 3))


def silhouettes(vertices, faces, cameras: list[Camera], size: int, device=None) -> torch.Tensor:
    """(V, size, size) bool coverage of the mesh in every view, all views in one batch (no depth test
    needed for coverage): the fast path for camera alignment."""
    v, f = _as_tensors(vertices, faces, device)
    out = torch.zeros(len(cameras) * size * size, dtype=torch.bool, device=v.device)
    if len(f) and cameras:
        proj = [project_points(v, c, size) for c in cameras]
        tri = torch.cat([xy[f] for xy, _ in proj])
        tz = torch.cat([d[f] for _, d in proj])
        offset = torch.arange(len(cameras), device=v.device).repeat_interleave(len(f)) * (size * size)
        _, pix, _, _ = _candidates(tri, tz, size, offset, False)
        out[pix] = True
    return out.view(len(cameras), size, size)


def surface_points(raster: ViewRaster, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(S, S, 3) world points of the visible surface (zeros where nothing is hit)."""
    fid = raster.face.clamp(min=0)
    tri = vertices.float()[faces.long()[fid]]  # (S, S, 3, 3)
    pts = (raster.bary[..., None] * tri).sum(dim=-2)
    return torch.where(raster.mask[..., None], pts, torch.zeros_like(pts))


def render_colors(vertices, faces, camera: Camera, size: int, color_fn, *, supersample: int = 1,
                  device=None) -> tuple[np.ndarray, np.ndarray]:
    """Unlit render of a mesh coloured by ``color_fn`` ((N, 3) world points -> (N, 3) in [0, 1],
    numpy), on white. Returns rgb (size, size, 3) float32 and coverage (size, size) float32;
    ``supersample`` s renders s*size and box-filters down (antialiased edges, as a real frame)."""
    hi = size * supersample
    v = torch.as_tensor(np.asarray(vertices, np.float32))
    f = torch.as_tensor(np.asarray(faces, np.int64))
    r = rasterize(v, f, camera, hi, device=device)
    pts = surface_points(r, v.to(r.face.device), f.to(r.face.device)).reshape(-1, 3)
    m = r.mask.reshape(-1).cpu().numpy()
    rgb = np.ones((hi * hi, 3), np.float32)
    if m.any():
        rgb[m] = np.clip(np.asarray(color_fn(pts.cpu().numpy()[m]), np.float32), 0, 1)
    rgb, cover = rgb.reshape(hi, hi, 3), m.reshape(hi, hi).astype(np.float32)
    if supersample > 1:
        s = supersample
        rgb = rgb.reshape(size, s, size, s, 3).mean(axis=(1, 3))
        cover = cover.reshape(size, s, size, s).mean(axis=(1, 3))
    return rgb, cover
