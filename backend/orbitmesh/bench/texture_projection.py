"""Texture projection: texture a perturbed mesh from 21 orbit renders of a known textured object.

A procedural object with a high-frequency albedo (checker + stripes) is meshed finely (the
"known textured mesh") and rendered unlit, antialiased, from the 21 SV3D orbit cameras (the
stand-ins for generated frames). A perturbed copy of its geometry (coarser marching cubes,
decimated, vertices jittered along their normals) is UV-unwrapped and textured from those
frames by :func:`orbitmesh.quality.project.project_texture`. Errors are mean absolute colour
differences (0..1, per channel) against the true albedo at each texel's point projected onto
the true surface, over the texels some view saw; the baseline is per-vertex colours from a
blurred colour field (what an LRM's soft colour field gives), interpolated over the same texels.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

SEED_ROTATION = 7


def textured_shape():
    """A fixed two-part object with a fine checker and stripes (half-size ~0.45)."""
    import torch

    from orbitmesh.data.sdf import Part, Shape

    rng = np.random.default_rng(SEED_ROTATION)
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    rot = torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]], dtype=torch.float32)
    body = Part("rounded_box", (0.34, 0.27, 0.22, 0.06), rot, torch.zeros(3), (0.92, 0.25, 0.15),
                (0.12, 0.3, 0.85), texture="checker", frequency=9.0)
    head = Part("sphere", (0.2,), torch.eye(3), torch.tensor([0.05, 0.18, 0.26]), (0.95, 0.85, 0.2),
                (0.1, 0.55, 0.3), texture="stripes", frequency=14.0, texture_axis=2)
    return Shape([body, head], smoothness=0.04)


def _sdf_grid(shape, resolution: int) -> np.ndarray:
    import torch

    axis = torch.linspace(-1, 1, resolution)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        return np.concatenate([shape.sdf(c).numpy() for c in pts.split(1 << 20)]).reshape((resolution,) * 3)


def shape_mesh(shape, resolution: int, target_faces: int | None) -> tuple[np.ndarray, np.ndarray]:
    from orbitmesh.mesh import clean_mesh, decimate, extract_surface, orient_outward

    ex = extract_surface(-_sdf_grid(shape, resolution), 0.0, target_faces=None)
    v, f, _ = clean_mesh(ex.vertices, ex.faces)
    if target_faces is not None and len(f) > target_faces:
        v, f = decimate(v, f, target_faces)
        v, f, _ = clean_mesh(v, f, min_component_fraction=0.0)
    return v.astype(np.float32), orient_outward(v, f)


def albedo_fn(shape):
    """(N, 3) points -> true albedo at the closest point of the true surface."""
    import torch

    def fn(p: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            q = torch.from_numpy(np.asarray(p, np.float32))
            for _ in range(2):
                q = q - shape.sdf(q)[:, None] * shape.normals(q)
            return shape.albedo(q).numpy()

    return fn


def blurred_fn(shape, sigma: float, samples: int = 24):
    """The albedo averaged over a Gaussian neighbourhood: a soft, LRM-like colour field."""
    import torch

    offsets = torch.from_numpy(np.random.default_rng(0).normal(scale=sigma, size=(samples, 3)).astype(np.float32))

    def fn(p: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            q = torch.from_numpy(np.asarray(p, np.float32))
            return torch.stack([shape.albedo(q + o) for o in offsets]).mean(0).numpy()

    return fn


def run(*, frame_size: int = 256, texture_size: int = 512, target_faces: int = 8000, jitter: float = 0.003,
        blur: float = 0.04, elevation: float = 10.0, device: str = "cpu") -> dict:
    """Texture a ``target_faces``-face perturbed mesh (vertices jittered by ``jitter`` world units along the
    normals) with a ``texture_size``^2 texture from 21 orbit frames of ``frame_size`` pixels at ``elevation``
    degrees, rasterised/projected on torch ``device``; the baseline colour field is blurred by ``blur``
    (sigma, world units).
    """
    from orbitmesh.mesh import rasterize as rasterize_uv
    from orbitmesh.mesh import unwrap_uv, vertex_normals
    from orbitmesh.pipeline.orbit import orbit_azimuths_deg
    from orbitmesh.quality.cameras import OrbitAlignment
    from orbitmesh.quality.project import View, project_texture
    from orbitmesh.quality.raster import render_colors

    t_all = time.perf_counter()
    shape = textured_shape()
    truth = albedo_fn(shape)
    blurred = blurred_fn(shape, blur)

    t0 = time.perf_counter()
    tv, tf = shape_mesh(shape, 128, 60000)  # the known mesh
    align = OrbitAlignment()
    views = []
    for i, az in enumerate(orbit_azimuths_deg(21)):
        cam = align.camera(float(az), elevation)
        rgb, cover = render_colors(tv, tf, cam, frame_size, shape_albedo_on_surface(shape), supersample=2,
                                   device=device)
        views.append(View(rgb, cover, cam, name=f"orbit_{i:02d}", azimuth_deg=float(az)))
    render_s = time.perf_counter() - t0

    # the perturbed copy: coarser, decimated, jittered along the normals, UV-unwrapped
    v, f = shape_mesh(shape, 96, target_faces)
    rng = np.random.default_rng(1)
    v = (v + vertex_normals(v, f) * rng.normal(scale=jitter, size=(len(v), 1))).astype(np.float32)
    uvm = unwrap_uv(v, f, texture_size=texture_size)

    t1 = time.perf_counter()
    res = project_texture(uvm.vertices, uvm.faces, uvm.uvs, views, texture_size, fill_fn=blurred,
                          device=device)
    project_s = time.perf_counter() - t1

    flat = res.texture.reshape(-1, 3).astype(np.float32) / 255.0
    seen = res.seen.reshape(-1)[res.texel_index]
    idx = res.texel_index[seen]
    pts = res.texel_points[seen]
    gt = truth(pts)
    err_proj = float(np.abs(flat[idx] - gt).mean())
    # baseline: vertex colours of the blurred field, interpolated per texel
    r = rasterize_uv(uvm.uvs, uvm.faces, texture_size, margin=1.0)
    order = np.argsort(r.texel)
    pos = order[np.searchsorted(r.texel[order], idx)]
    vcol = blurred(uvm.vertices)
    vc = np.einsum("tk,tkc->tc", r.bary[pos], vcol[uvm.faces[r.face[pos]]])
    err_vc = float(np.abs(vc - gt).mean())
    err_all_fill = float(np.abs(flat[res.texel_index] - truth(res.texel_points)).mean())
    return {"bench": "texture-projection", "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
            "device": str(device), "frames": len(views), "frame_size": frame_size,
            "texture_size": texture_size, "faces": int(len(uvm.faces)), "true_faces": int(len(tf)),
            "seen_fraction": round(res.seen_fraction, 4),
            "mean_abs_error_visible": round(err_proj, 5),
            "mean_abs_error_vertex_colors": round(err_vc, 5),
            "mean_abs_error_all_texels": round(err_all_fill, 5),
            "seconds": round(project_s, 4), "seconds_render_frames": round(render_s, 3),
            "seconds_total": round(time.perf_counter() - t_all, 3)}


def shape_albedo_on_surface(shape):
    """Colour of rendered mesh points: the albedo at the closest true-surface point."""
    return albedo_fn(shape)


def format_table(result: dict) -> str:
    lines = [f"texture-projection ({result['machine']}, device {result['device']}): {result['frames']} frames at "
             f"{result['frame_size']}px -> {result['texture_size']}^2 texture on {result['faces']} faces",
             f"  mean abs error, projected (seen texels)   {result['mean_abs_error_visible']:.4f}  (bar <= 0.03)",
             f"  mean abs error, blurred vertex colours    {result['mean_abs_error_vertex_colors']:.4f}",
             f"  mean abs error, all texels (with fill)    {result['mean_abs_error_all_texels']:.4f}",
             f"  texels seen by some view                  {result['seen_fraction']:.1%}",
             f"  projection seconds                        {result['seconds']:.3f}",
             f"  (rendering the 21 frames: {result['seconds_render_frames']:.2f} s; "
             f"total {result['seconds_total']:.2f} s)"]
    return "\n".join(lines)
