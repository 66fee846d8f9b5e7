"""Cameras, rays and a torch SDF sphere tracer (RGB on white, alpha, depth).

Camera convention (the LRM's, VFusion3D): ``c2w`` is a 3x4 camera-to-world matrix whose
columns are the camera's right, up and backward axes and its position (OpenGL/Blender
axes); rays are built in the OpenCV pixel convention (x right, y down, z forward) and
flipped into those axes. The canonical source camera sits at (1, 0, 0) looking at the
origin with world up +z: ``[[0,0,1,1],[1,0,0,0],[0,1,0,0]]``. Intrinsics are
``(fx, fy, cx, cy)`` normalised by the image size; pixel centres are at (i + 0.5) / W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from orbitmesh.data.sdf import Shape
from orbitmesh.models.lrm.camera import look_at as lrm_look_at

SOURCE_DISTANCE = 1.0
SOURCE_INTRINSICS = (0.75, 0.75, 0.5, 0.5)
# Fixed world-space lights: the baked shading is view independent, as the LRM's colour field is.
AMBIENT = 0.42
LIGHTS = (((0.55, 0.35, 0.75), 0.5), ((-0.6, -0.45, 0.2), 0.18))


def look_at(position, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """(3, 4) float32 camera-to-world matrix of a camera at ``position`` looking at ``target``."""
    return lrm_look_at(torch.as_tensor(position, dtype=torch.float32)[None],
                       torch.as_tensor(target, dtype=torch.float32), torch.as_tensor(up, dtype=torch.float32))[0]


def orbit_camera(azimuth_deg: float, elevation_deg: float, distance: float) -> torch.Tensor:
    """(3, 4) camera on a sphere around the origin; azimuth 0, elevation 0 is the +x axis."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    pos = (distance * math.cos(el) * math.cos(az), distance * math.cos(el) * math.sin(az),
           distance * math.sin(el))
    return look_at(pos)


def source_camera(distance: float = SOURCE_DISTANCE) -> torch.Tensor:
    """(3, 4) the canonical LRM input camera: at (distance, 0, 0), up +z."""
    return orbit_camera(0.0, 0.0, distance)


def camera_rays(c2w: torch.Tensor, intrinsics, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel centre, row-major from the top-left.

    Returns origins and unit directions, each (H*W, 3) float32.
    """
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    v, u = torch.meshgrid((torch.arange(height, dtype=torch.float32) + 0.5) / height,
                          (torch.arange(width, dtype=torch.float32) + 0.5) / width, indexing="ij")
    return pixel_rays(c2w, (fx, fy, cx, cy), u.reshape(-1), v.reshape(-1))


def pixel_rays(c2w: torch.Tensor, intrinsics, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through normalised image points ``u``, ``v`` (N,) in [0, 1] (0 = left/top edge).

    Returns origins and unit directions (N, 3).
    """
    fx, fy, cx, cy = (float(x) for x in intrinsics)
    c2w = c2w.to(torch.float32)
    # OpenCV camera direction, then flip y and z into the c2w's OpenGL axes.
    d_cam = torch.stack([(u - cx) / fx, -(v - cy) / fy, -torch.ones_like(u)], dim=-1)
    dirs = d_cam @ c2w[:, :3].T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return c2w[:, 3].expand_as(dirs).contiguous(), dirs


def ray_sphere(origins: torch.Tensor, dirs: torch.Tensor,
               radius: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form intersection of unit-direction rays with a centred sphere: (t_near, t_far, hit)."""
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius * radius
    disc = b * b - c
    hit = disc > 0
    root = disc.clamp(min=0).sqrt()
    return -b - root, -b + root, hit


def sphere_trace(shape: Shape, origins: torch.Tensor, dirs: torch.Tensor, bound: float = 0.8,
                 max_steps: int = 128, eps: float = 2e-4, relax: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """March each ray by the SDF until it is within ``eps`` of the surface.

    Only rays crossing the bounding sphere of radius ``bound`` are marched, and only while
    inside it. Returns ``t`` (N,) ray distance of the hit (inf on a miss) and ``hit`` (N,) bool.
    """
    n = origins.shape[0]
    t_near, t_far, crosses = ray_sphere(origins, dirs, bound)
    t = t_near.clamp(min=0.0)
    t_out = torch.full((n,), math.inf)
    hit = torch.zeros(n, dtype=torch.bool)
    active = torch.nonzero(crosses & (t_far > 0)).squeeze(1)
    for _ in range(max_steps):
        if active.numel() == 0:
            break
        ta = t[active]
        d = shape.sdf(origins[active] + ta[:, None] * dirs[active])
        done = d.abs() < eps
        hit[active[done]] = True
        t_out[active[done]] = ta[done]
        ta = ta + relax * d
        t[active] = ta
        alive = ~done & (ta < t_far[active])
        active = active[alive]
    return t_out, hit


def shade(shape: Shape, points: torch.Tensor) -> torch.Tensor:
    """(N, 3) surface points -> (N, 3) RGB: albedo times fixed ambient + Lambert lights."""
    normals = shape.normals(points)
    light = torch.full((points.shape[0],), AMBIENT)
    for direction, strength in LIGHTS:
        ld = torch.tensor(direction)
        light = light + strength * (normals @ (ld / ld.norm())).clamp(min=0.0)
    return (shape.albedo(points) * light[:, None]).clamp(0.0, 1.0)


@dataclass
class RenderedView:
    """One rendered view. ``rgb`` (H, W, 3) on white, ``alpha`` (H, W), ``depth`` (H, W) ray distance
    (0 where nothing is hit), ``c2w`` (3, 4), ``intrinsics`` (4,) normalised; all float32."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    c2w: torch.Tensor
    intrinsics: torch.Tensor


def render_view(shape: Shape, c2w: torch.Tensor, size: int, intrinsics=SOURCE_INTRINSICS,
                supersample: int = 1, bound: float = 0.8) -> RenderedView:
    """Sphere-trace a ``size`` x ``size`` view; ``supersample`` s renders s*size and box-filters down."""
    hi = size * supersample
    origins, dirs = camera_rays(c2w, intrinsics, hi, hi)
    t, hit = sphere_trace(shape, origins, dirs, bound=bound)
    rgb = torch.ones(hi * hi, 3)
    depth = torch.zeros(hi * hi)
    if hit.any():
        pts = origins[hit] + t[hit, None] * dirs[hit]
        rgb[hit] = shade(shape, pts)
        depth[hit] = t[hit]
    alpha = hit.to(torch.float32)
    rgb, depth, alpha = rgb.reshape(hi, hi, 3), depth.reshape(hi, hi), alpha.reshape(hi, hi)
    if supersample > 1:
        s = supersample

        def pool(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(size, s, size, s, *x.shape[2:]).mean(dim=(1, 3))

        cover = pool(alpha)
        depth = torch.where(cover > 0, pool(depth) / cover.clamp(min=1e-6), 0.0)
        rgb, alpha = pool(rgb), cover
    return RenderedView(rgb, alpha, depth, c2w.clone(), torch.tensor(intrinsics, dtype=torch.float32))
