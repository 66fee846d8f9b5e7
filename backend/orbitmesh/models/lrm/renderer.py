"""Volume rendering of a triplane: rays, box limits, stratified + importance sampling, MipNeRF marching.

Follows the VFusion3D/EG3D renderer step by step (so renders match it to float precision).
``deterministic=True`` puts stratified samples at bin midpoints and importance samples at
u = linspace(0, 1, N), which makes a render reproducible without a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from orbitmesh.models.lrm.triplane import activate_density

# OpenCV camera (x right, y down, z forward) -> the cam-to-world convention of the
# cameras (OpenGL/Blender: y up, looking down -z).
_OPENCV_TO_GL = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass(frozen=True)
class RenderOptions:
    depth_resolution: int
    depth_resolution_importance: int
    box_warp: float = 2.0
    bbox_min: float = -1.0
    bbox_max: float = 1.0
    white_back: bool = True


def camera_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor,
                render_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cam2world (B, 4, 4), normalised intrinsics (B, 3, 3) -> origins, unit directions (B, S*S, 3).

    Pixel (row i, column j) is ray index i*S + j, through the pixel centre.
    """
    b, dev = cam2world.shape[0], cam2world.device
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    rows, cols = torch.meshgrid(torch.arange(render_size, dtype=torch.float32, device=dev),
                                torch.arange(render_size, dtype=torch.float32, device=dev), indexing="ij")
    x_cam = (cols.reshape(1, -1) * (1.0 / render_size) + (0.5 / render_size)).expand(b, -1)
    y_cam = (rows.reshape(1, -1) * (1.0 / render_size) + (0.5 / render_size)).expand(b, -1)
    z_cam = torch.ones_like(x_cam)
    x_lift = (x_cam - cx + cy * sk / fy - sk * y_cam / fy) / fx * z_cam
    y_lift = (y_cam - cy) / fy * z_cam
    cam_points = torch.stack((x_lift, y_lift, z_cam, torch.ones_like(z_cam)), dim=-1).float()  # (B, S*S, 4)
    c2w = torch.bmm(cam2world.float(), _OPENCV_TO_GL.to(dev).expand(b, 4, 4))
    world = torch.bmm(c2w, cam_points.permute(0, 2, 1)).permute(0, 2, 1)[..., :3]
    origins = cam2world[:, :3, 3].float()
    dirs = F.normalize(world - origins[:, None, :], dim=2)
    return origins.unsqueeze(1).expand(-1, dirs.shape[1], -1).contiguous(), dirs


def ray_box_limits(origins: torch.Tensor, dirs: torch.Tensor, box_side: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab intersection with the cube of side ``box_side`` -> (t_min, t_max) (..., 1); -1/-2 when missed."""
    shape = origins.shape
    o, d = origins.detach().reshape(-1, 3), dirs.detach().reshape(-1, 3)
    half = box_side / 2
    bounds = torch.tensor([[-half] * 3, [half] * 3], dtype=o.dtype, device=o.device)
    valid = torch.ones(o.shape[:-1], dtype=torch.bool, device=o.device)
    inv = 1 / d
    sign = (inv < 0).long()

    def slab(axis: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo = (bounds.index_select(0, sign[:, axis])[:, axis] - o[:, axis]) * inv[:, axis]
        hi = (bounds.index_select(0, 1 - sign[:, axis])[:, axis] - o[:, axis]) * inv[:, axis]
        return lo, hi

    tmin, tmax = slab(0)
    tymin, tymax = slab(1)
    valid[torch.logical_or(tmin > tymax, tymin > tmax)] = False
    tmin, tmax = torch.max(tmin, tymin), torch.min(tmax, tymax)
    tzmin, tzmax = slab(2)
    valid[torch.logical_or(tmin > tzmax, tzmin > tmax)] = False
    tmin, tmax = torch.max(tmin, tzmin), torch.min(tmax, tzmax)
    tmin[~valid] = -1
    tmax[~valid] = -2
    return tmin.reshape(*shape[:-1], 1), tmax.reshape(*shape[:-1], 1)


def sample_stratified(ray_start: torch.Tensor, ray_end: torch.Tensor, n: int, deterministic: bool,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """ray_start/end (B, R, 1) -> depths (B, R, n, 1): n evenly spaced depths, each jittered within its bin."""
    steps = torch.arange(n, dtype=torch.float32, device=ray_start.device) / (n - 1)
    depths = (ray_start[None] + steps.view(-1, 1, 1, 1) * (ray_end - ray_start)[None]).permute(1, 2, 0, 3)
    delta = (ray_end - ray_start) / (n - 1)
    if deterministic:
        jitter = torch.full_like(depths, 0.5)
    else:
        jitter = torch.rand(depths.shape, generator=generator, device=depths.device, dtype=depths.dtype)
    return depths + jitter * delta[..., None]


def ray_march(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor,
              white_back: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MipNeRF compositing of (B, R, S, *) samples -> rgb (B, R, 3), depth (B, R, 1), weights (B, R, S-1, 1)."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = activate_density((densities[:, :, :-1] + densities[:, :, 1:]) / 2)
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-densities_mid * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    weights = alpha * torch.cumprod(alpha_shifted, -2)[:, :, :-1]
    rgb = torch.sum(weights * colors_mid, -2)
    weight_total = weights.sum(2)
    depth = torch.sum(weights * depths_mid, -2) / weight_total
    depth = torch.clamp(torch.nan_to_num(depth, float("inf")), torch.min(depths), torch.max(depths))
    if white_back:
        rgb = rgb + 1 - weight_total
    return rgb, depth, weights


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, deterministic: bool,
               generator: torch.Generator | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling: bins (R, K+1), weights (R, K) -> (R, n) depths."""
    n_rays, n_bins = weights.shape
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    if deterministic:
        u = torch.linspace(0, 1, n, device=bins.device).expand(n_rays, n)
    else:
        u = torch.rand(n_rays, n, generator=generator, device=bins.device)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(inds - 1, 0)
    above = torch.clamp_max(inds, n_bins)
    inds_g = torch.stack([below, above], -1).view(n_rays, 2 * n)
    cdf_g = torch.gather(cdf, 1, inds_g).view(n_rays, n, 2)
    bins_g = torch.gather(bins, 1, inds_g).view(n_rays, n, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)  # empty bins are never sampled
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def sample_importance(depths: torch.Tensor, weights: torch.Tensor, n: int, deterministic: bool,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """depths (B, R, S, 1), coarse weights (B, R, S-1, 1) -> (B, R, n, 1) depths drawn from the smoothed weights."""
    with torch.no_grad():
        b, r, s, _ = depths.shape
        z = depths.reshape(b * r, s)
        w = weights.reshape(b * r, -1).unsqueeze(1).float()
        w = F.max_pool1d(w, 2, 1, padding=1)
        w = F.avg_pool1d(w, 2, 1).squeeze(1) + 0.01
        z_mid = 0.5 * (z[:, :-1] + z[:, 1:])
        return sample_pdf(z_mid, w[:, 1:-1], n, deterministic, generator).reshape(b, r, n, 1)


# query(points (B, P, 3)) -> {'rgb': (B, P, 3), 'sigma': (B, P, 1) raw}
QueryFn = Callable[[torch.Tensor], dict]


def _shade(query: QueryFn, origins: torch.Tensor, dirs: torch.Tensor, depths: torch.Tensor,
           opts: RenderOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Query every sample; samples outside the box get rgb 0 and a huge negative raw density."""
    b, r, s, _ = depths.shape
    points = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(b, -1, 3)
    inbox = ((opts.bbox_min <= points) & (points <= opts.bbox_max)).all(-1)
    out = query(points)
    # -float32 max / 3: finite, so averaging two of them in the marcher cannot overflow.
    floor = torch.finfo(out["sigma"].dtype).min / 3
    colors = torch.where(inbox[..., None], out["rgb"], torch.zeros_like(out["rgb"]))
    sigmas = torch.where(inbox[..., None], out["sigma"], torch.full_like(out["sigma"], floor))
    return colors.reshape(b, r, s, 3), sigmas.reshape(b, r, s, 1)


def render_rays(query: QueryFn, origins: torch.Tensor, dirs: torch.Tensor, opts: RenderOptions,
                deterministic: bool = False, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """origins/dirs (B, R, 3) -> rgb (B, R, 3), depth (B, R, 1), accumulated weight (B, R, 1)."""
    ray_start, ray_end = ray_box_limits(origins, dirs, opts.box_warp)
    valid = ray_end > ray_start
    if torch.any(valid).item():
        # As the reference: rays that miss the box march over the span of the hitting rays' starts.
        ray_start[~valid] = ray_start[valid].min()
        ray_end[~valid] = ray_start[valid].max()
    depths = sample_stratified(ray_start, ray_end, opts.depth_resolution, deterministic, generator)
    colors, sigmas = _shade(query, origins, dirs, depths, opts)
    if opts.depth_resolution_importance > 0:
        _, _, weights = ray_march(colors, sigmas, depths, opts.white_back)
        fine = sample_importance(depths, weights, opts.depth_resolution_importance, deterministic, generator)
        colors_f, sigmas_f = _shade(query, origins, dirs, fine, opts)
        depths = torch.cat([depths, fine], dim=-2)
        colors = torch.cat([colors, colors_f], dim=-2)
        sigmas = torch.cat([sigmas, sigmas_f], dim=-2)
        depths, order = torch.sort(depths, dim=-2)
        colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
        sigmas = torch.gather(sigmas, -2, order)
    rgb, depth, weights = ray_march(colors, sigmas, depths, opts.white_back)
    return rgb, depth, weights.sum(2)
