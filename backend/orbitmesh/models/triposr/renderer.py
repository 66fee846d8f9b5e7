"""TripoSR's volume renderer and cameras, step for step as the reference ``TriplaneNeRFRenderer``.

Rays are clipped to the box [-radius, radius]^3 (shrunk by 0.1%); a ray whose span inside is
<= 0.01 is empty. Each ray gets ``num_samples`` samples at the bin midpoints of t in [0, 1]
mapped onto [t_near, t_far]; the alpha of a sample is 1 - exp(-density / num_samples): the
spacing is the *normalised* t step, not the world distance (the reference's choice, which the
weights were trained with). Colours composite front to back over a white background.

Cameras (:func:`spherical_rays`): the reference's orbit, z up, azimuth 0 on +x looking at the
origin (image right = +y), OpenGL-style (looking down -z of the camera).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from orbitmesh.models.triposr.config import SOURCE_DISTANCE, SOURCE_FOVY_DEG

# query(points (N, P, 3) world) -> (density (N, P, 1) activated, colour (N, P, 3))
FieldFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def rays_box_limits(rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float, near: float = 0.0,
                    valid_thresh: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rays (..., 3) -> t_near, t_far (..., 1) and valid (...) bool; empty rays get t_near = t_far = 0."""
    shape = rays_o.shape[:-1]
    o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    d = torch.where(d.abs() < 1e-6, torch.full_like(d, 1e-6), d)
    box = (1.0 - 1.0e-3) * torch.tensor([[-radius, radius]] * 3, dtype=torch.float32, device=o.device)
    t0 = (box[..., 1] - o) / d
    t1 = (box[..., 0] - o) / d
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(near)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    valid = t_far - t_near > valid_thresh
    t_near = torch.where(valid, t_near, torch.zeros_like(t_near))
    t_far = torch.where(valid, t_far, torch.zeros_like(t_far))
    return t_near.reshape(*shape, 1), t_far.reshape(*shape, 1), valid.reshape(shape)


def render_rays(field: FieldFn, rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float, num_samples: int
                ) -> dict[str, torch.Tensor]:
    """rays (N, R, 3) -> {'rgb': (N, R, 3) on white, 'opacity': (N, R), 'depth': (N, R) world t (0 when empty)}.

    Differentiable in the field. Empty rays are still queried (at the ray origin) and then masked out,
    which keeps the batch rectangular; their results are those of the reference (white, opacity 0).
    """
    n, r, _ = rays_o.shape
    t_near, t_far, valid = rays_box_limits(rays_o, rays_d, radius)  # (N, R, 1) x2, (N, R)
    t_vals = torch.linspace(0, 1, num_samples + 1, device=rays_o.device)
    t_mid = (t_vals[:-1] + t_vals[1:]) / 2.0
    z_vals = t_near * (1 - t_mid) + t_far * t_mid  # (N, R, S)
    xyz = rays_o[..., None, :] + z_vals[..., None] * rays_d[..., None, :]  # (N, R, S, 3)
    density, color = field(xyz.reshape(n, -1, 3))
    density = density.reshape(n, r, num_samples)
    color = color.reshape(n, r, num_samples, 3)
    deltas = t_vals[1:] - t_vals[:-1]  # normalised t spacing, as the reference
    alpha = 1 - torch.exp(-deltas * density)
    eps = 1e-10
    accum = torch.cat([torch.ones_like(alpha[..., :1]), torch.cumprod(1 - alpha[..., :-1] + eps, dim=-1)], dim=-1)
    weights = alpha * accum * valid[..., None].to(alpha.dtype)
    rgb = (weights[..., None] * color).sum(dim=-2)
    opacity = weights.sum(dim=-1)
    depth = (weights * z_vals).sum(dim=-1)
    rgb = rgb + (1 - opacity[..., None])
    return {"rgb": rgb, "opacity": opacity, "depth": depth}


def ray_directions(height: int, width: int, focal: float = 1.0) -> torch.Tensor:
    """(H, W, 3) unit camera-space directions through pixel centres: x right, y up, looking down -z."""
    i, j = torch.meshgrid(torch.arange(width, dtype=torch.float32) + 0.5,
                          torch.arange(height, dtype=torch.float32) + 0.5, indexing="xy")
    dirs = torch.stack([(i - width / 2) / focal, -(j - height / 2) / focal, -torch.ones_like(i)], -1)
    return F.normalize(dirs, dim=-1)


def spherical_cameras(n_views: int, elevation_deg: float, camera_distance: float) -> torch.Tensor:
    """cam-to-world (V, 4, 4) of ``n_views`` cameras at azimuths 0, 360/V, ... (from +x towards +y) looking at the
    origin, z up; columns right, up, backward (OpenGL)."""
    azimuth = torch.linspace(0, 360.0, n_views + 1)[:n_views] * math.pi / 180
    elevation = torch.full_like(azimuth, elevation_deg) * math.pi / 180
    distance = torch.full_like(azimuth, camera_distance)
    position = torch.stack([distance * torch.cos(elevation) * torch.cos(azimuth),
                            distance * torch.cos(elevation) * torch.sin(azimuth),
                            distance * torch.sin(elevation)], dim=-1)
    up = torch.tensor([0.0, 0.0, 1.0]).expand(n_views, 3)
    lookat = F.normalize(-position, dim=-1)
    right = F.normalize(torch.linalg.cross(lookat, up, dim=-1), dim=-1)
    up = F.normalize(torch.linalg.cross(right, lookat, dim=-1), dim=-1)
    c2w = torch.zeros(n_views, 4, 4)
    c2w[:, :3, :3] = torch.stack([right, up, -lookat], dim=-1)
    c2w[:, :3, 3] = position
    c2w[:, 3, 3] = 1.0
    return c2w


def spherical_rays(n_views: int, elevation_deg: float = 0.0, camera_distance: float = SOURCE_DISTANCE,
                   fovy_deg: float = SOURCE_FOVY_DEG,
                   height: int = 256, width: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's ``get_spherical_cameras``: rays_o, rays_d (V, H, W, 3), unit directions."""
    c2w = spherical_cameras(n_views, elevation_deg, camera_distance)
    fovy = torch.full((n_views,), fovy_deg) * math.pi / 180
    focal = 0.5 * height / torch.tan(0.5 * fovy)
    dirs = ray_directions(height, width, 1.0)[None].repeat(n_views, 1, 1, 1)
    dirs[..., :2] = dirs[..., :2] / focal[:, None, None, None]
    rays_d = F.normalize((dirs[:, :, :, None, :] * c2w[:, None, None, :3, :3]).sum(-1), dim=-1)
    rays_o = c2w[:, None, None, :3, 3].expand(rays_d.shape)
    return rays_o, rays_d
