"""Pixel-aligned triplane tokens: image features lifted onto the planes through the source camera.

VFusion3D's triplane tokens start as learned positions and find the image only through
cross-attention, which a from-scratch encoder learns slowly (a small model trained on a CPU
barely conditions on the image). Lifting gives each token, from the first step, the image
features at the projections of ``samples`` points along the axis its plane leaves out
(a PixelNeRF-style unprojection onto the triplane grid). The transformer still cross-attends
and refines. Off (``lift_samples = 0``) in the released VFusion3D config, so parity holds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from orbitmesh.models.lrm.triplane import PLANE_AXES


def token_points(low_res: int, samples: int, box_warp: float, extent: float) -> torch.Tensor:
    """World points (3, low_res^2, samples, 3) for every plane token.

    Token (row, col) of plane p covers the plane coordinates ``PLANE_AXES[p] = (a, b)`` at the
    centres of a low_res grid over the box (a = col, b = row: grid_sample's x, y), and the
    samples run along the remaining axis over [-extent, extent].
    """
    centres = (torch.arange(low_res, dtype=torch.float32) + 0.5) / low_res * box_warp - box_warp / 2
    depth = torch.linspace(-extent, extent, samples)
    rows, cols, ks = torch.meshgrid(centres, centres, depth, indexing="ij")  # (r, r, K)
    planes = []
    for a, b in PLANE_AXES:
        c = 3 - a - b
        pts = torch.zeros(low_res, low_res, samples, 3)
        pts[..., a], pts[..., b], pts[..., c] = cols, rows, ks
        planes.append(pts.reshape(low_res * low_res, samples, 3))
    return torch.stack(planes)


def project_points(points: torch.Tensor, camera: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """points (P, 3), camera (N, 16) source cameras -> image coordinates (N, P, 2) in grid_sample's
    [-1, 1] (x right, y down) and in-front flags (N, P).

    The camera is the 3x4 OpenGL cam-to-world (columns right, up, back, position) + fx, fy, cx, cy
    normalised by the image size.
    """
    ext = camera[:, :12].reshape(-1, 3, 4).float()
    fx, fy, cx, cy = camera[:, 12:16].float().unbind(-1)
    rel = points.to(ext)[None] - ext[:, None, :, 3]  # (N, P, 3)
    cam = torch.einsum("npk,nkj->npj", rel, ext[:, :, :3])  # right, up, back components
    depth = -cam[..., 2]
    front = depth > 1e-3
    safe = torch.where(front, depth, torch.ones_like(depth))
    u = cx[:, None] + fx[:, None] * cam[..., 0] / safe
    v = cy[:, None] - fy[:, None] * cam[..., 1] / safe
    return torch.stack([2 * u - 1, 2 * v - 1], dim=-1), front


class PixelStem(nn.Module):
    """(N, 3, H, W) image in [0, 1] -> (N, C, H/4, W/4) local features (two stride-2 convs, one 3x3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, channels // 2, 3, stride=2, padding=1), nn.GELU(),
                                 nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1), nn.GELU(),
                                 nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image * 2 - 1)


class TokenLifting(nn.Module):
    """Initial triplane tokens (N, 3 r^2, D) from the encoder's patch grid, a pixel stem and the RGB.

    For each token, ``samples`` points along its plane's missing axis are projected through the
    source camera; the features there (bilinear, zeros outside the image, plus an inside flag)
    are concatenated in depth order and mapped to the token width by one Linear per plane.
    """

    def __init__(self, encoder_dim: int, stem_dim: int, dim: int, low_res: int, samples: int,
                 box_warp: float, extent: float) -> None:
        super().__init__()
        self.stem = PixelStem(stem_dim)
        per_sample = encoder_dim + stem_dim + 3 + 1
        self.proj = nn.ModuleList([nn.Linear(samples * per_sample, dim) for _ in PLANE_AXES])
        for lin in self.proj:  # start small: the learned positions dominate until lifting is useful
            nn.init.normal_(lin.weight, std=0.5 / (samples * per_sample) ** 0.5)
            nn.init.zeros_(lin.bias)
        # Made per call, not held: a model built on the meta device (loaded by assignment) would lose it.
        self.grid = (low_res, samples, box_warp, extent)

    def forward(self, image: torch.Tensor, patch_tokens: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """image (N, 3, H, W) in [0, 1]; patch_tokens (N, h*w, Ce) without CLS; camera (N, 16) -> (N, 3 r^2, D)."""
        n, hw, ce = patch_tokens.shape
        side = int(round(hw ** 0.5))
        patch_map = patch_tokens.transpose(1, 2).reshape(n, ce, side, side)
        maps = [patch_map, self.stem(image.to(patch_tokens.dtype)), image.to(patch_tokens.dtype)]
        points = token_points(*self.grid).to(camera.device)
        n_planes, tokens, _, _ = points.shape
        coords, front = project_points(points.reshape(-1, 3), camera)  # (N, P, 2), (N, P)
        inside = front & (coords.abs() <= 1).all(-1)
        grid = torch.where(front[..., None], coords, torch.full_like(coords, 2.0))[:, None].to(patch_tokens.dtype)
        feats = [F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, :, 0]
                 for m in maps]  # (N, C, P) each
        feats.append(inside[:, None].to(patch_tokens.dtype))
        feats = torch.cat(feats, dim=1).transpose(1, 2).reshape(n, n_planes, tokens, -1)  # (N, 3, r^2, K*C)
        out = [self.proj[p](feats[:, p]) for p in range(n_planes)]
        return torch.cat(out, dim=1)
