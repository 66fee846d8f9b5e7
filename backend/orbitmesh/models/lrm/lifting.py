"""Pixel-aligned triplane tokens: image features lifted onto the planes through the source camera.

VFusion3D's triplane tokens start as learned positions and find the image only through
cross-attention, which a from-scratch encoder learns slowly (a small model trained on a CPU
barely conditions on the image). Lifting gives each token, from the first step, the image
features at the projections of ``samples`` points along the axis its plane leaves out
(a PixelNeRF-style unprojection onto the triplane grid). The transformer still cross-attends
and refines. Off (``lift_samples = 0``) in the released VFusion3D config, so parity holds.

Options on top (off by default; they start as identities, so a trained model can grow into them):
dilated context blocks after the pixel stem, and a :class:`PlaneRefiner` that lifts the stem
features onto every plane texel and adds a conv correction at full plane resolution.
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


class ContextBlock(nn.Module):
    """Residual 3x3 conv pair at one dilation; the second conv starts at zero (the block starts as identity)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class PixelStem(nn.Module):
    """(N, 3, H, W) image in [0, 1] -> (N, C, H/4, W/4) local features (two stride-2 convs, one 3x3),
    then ``blocks`` dilated residual blocks (dilations 1, 2, 4, 8, ...) that widen each feature's
    view to most of the image: shading and the outline tell depth, a 12-pixel patch does not."""

    def __init__(self, channels: int, blocks: int = 0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, channels // 2, 3, stride=2, padding=1), nn.GELU(),
                                 nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1), nn.GELU(),
                                 nn.Conv2d(channels, channels, 3, padding=1))
        self.context = nn.Sequential(*[ContextBlock(channels, 2 ** (i % 4)) for i in range(blocks)])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.context(self.net(image * 2 - 1))


def lift_features(maps: list[torch.Tensor], points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """Feature maps [(N, C_i, h_i, w_i)] sampled where ``points`` (3, T, K, 3) project through the
    source cameras (N, 16) -> (N, 3, T, K * (sum C_i + 1)): bilinear, zeros outside the image, plus
    an inside-the-frame flag, concatenated in depth order per T."""
    n_planes, tokens, samples, _ = points.shape
    coords, front = project_points(points.reshape(-1, 3), camera)  # (N, P, 2), (N, P)
    inside = front & (coords.abs() <= 1).all(-1)
    dtype = maps[0].dtype
    grid = torch.where(front[..., None], coords, torch.full_like(coords, 2.0))[:, None].to(dtype)
    feats = [F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, :, 0]
             for m in maps]  # (N, C, P) each
    feats.append(inside[:, None].to(dtype))
    n = camera.shape[0]
    return torch.cat(feats, dim=1).transpose(1, 2).reshape(n, n_planes, tokens, -1)


def per_plane_linear(x: torch.Tensor, layers: nn.ModuleList) -> torch.Tensor:
    """x (N, 3, T, F) through one Linear per plane -> (N, 3, T, D), as one batched matmul
    (indexing x per plane would make autograd zero-fill a full-size gradient three times)."""
    weight = torch.stack([lin.weight for lin in layers])  # (3, D, F)
    bias = torch.stack([lin.bias for lin in layers])  # (3, D)
    return torch.einsum("nptf,pdf->nptd", x, weight.to(x.dtype)) + bias.to(x.dtype)[None, :, None]


class TokenLifting(nn.Module):
    """Initial triplane tokens (N, 3 r^2, D) from the encoder's patch grid, a pixel stem and the RGB.

    For each token, ``samples`` points along its plane's missing axis are projected through the
    source camera; the features there (bilinear, zeros outside the image, plus an inside flag)
    are concatenated in depth order and mapped to the token width by one Linear per plane.
    """

    def __init__(self, encoder_dim: int, stem_dim: int, dim: int, low_res: int, samples: int,
                 box_warp: float, extent: float, stem_blocks: int = 0) -> None:
        super().__init__()
        self.stem = PixelStem(stem_dim, stem_blocks)
        per_sample = encoder_dim + stem_dim + 3 + 1
        self.proj = nn.ModuleList([nn.Linear(samples * per_sample, dim) for _ in PLANE_AXES])
        for lin in self.proj:  # start small: the learned positions dominate until lifting is useful
            nn.init.normal_(lin.weight, std=0.5 / (samples * per_sample) ** 0.5)
            nn.init.zeros_(lin.bias)
        # Made per call, not held: a model built on the meta device (loaded by assignment) would lose it.
        self.grid = (low_res, samples, box_warp, extent)

    def feature_maps(self, image: torch.Tensor, patch_tokens: torch.Tensor) -> list[torch.Tensor]:
        """image (N, 3, H, W) in [0, 1], patch_tokens (N, h*w, Ce) without CLS -> [patch grid
        (N, Ce, h, w), stem features (N, C, H/4, W/4), image (N, 3, H, W)]."""
        n, hw, ce = patch_tokens.shape
        side = int(round(hw ** 0.5))
        patch_map = patch_tokens.transpose(1, 2).reshape(n, ce, side, side)
        image = image.to(patch_tokens.dtype)
        return [patch_map, self.stem(image), image]

    def lift(self, maps: list[torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
        """The :meth:`feature_maps` of N images and their cameras (N, 16) -> tokens (N, 3 r^2, D)."""
        points = token_points(*self.grid).to(camera.device)
        tokens = per_plane_linear(lift_features(maps, points, camera), self.proj)  # (N, 3, r^2, D)
        return tokens.flatten(1, 2)

    def forward(self, image: torch.Tensor, patch_tokens: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """image (N, 3, H, W) in [0, 1]; patch_tokens (N, h*w, Ce) without CLS; camera (N, 16) -> (N, 3 r^2, D)."""
        return self.lift(self.feature_maps(image, patch_tokens), camera)


class PlaneRefiner(nn.Module):
    """A residual correction of the planes (N, 3, C, R, R) at their full resolution.

    The transformer's planes come from r x r tokens through a 2x2 deconv; here every plane texel
    gets the stem features and RGB where ``samples`` points along its missing axis project, and
    two 3x3 convs (one weight set per plane: grouped) mix them with the planes. The output conv
    starts at zero, so a model grown from a checkpoint starts as that checkpoint.
    """

    def __init__(self, plane_dim: int, feature_dim: int, hidden: int, res: int, samples: int,
                 box_warp: float, extent: float) -> None:
        super().__init__()
        n = len(PLANE_AXES)
        self.lift = nn.ModuleList([nn.Linear(samples * (feature_dim + 1), hidden) for _ in PLANE_AXES])
        self.conv1 = nn.Conv2d(n * (plane_dim + hidden), n * hidden, 3, padding=1, groups=n)
        self.conv2 = nn.Conv2d(n * hidden, n * hidden, 3, padding=1, groups=n)
        self.out = nn.Conv2d(n * hidden, n * plane_dim, 1, groups=n)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.grid = (res, samples, box_warp, extent)

    def forward(self, planes: torch.Tensor, maps: list[torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
        """planes (N, 3, C, R, R); maps: pixel-aligned feature maps [(N, C_i, h_i, w_i)] with
        sum C_i = ``feature_dim``; camera (N, 16) -> refined planes, same shape."""
        n, p, c, r, _ = planes.shape
        points = token_points(*self.grid).to(camera.device)
        lifted = per_plane_linear(lift_features(maps, points, camera), self.lift)  # (N, 3, R^2, hidden)
        lifted = lifted.transpose(2, 3).reshape(n, p, -1, r, r)
        x = torch.cat([planes.to(lifted.dtype), lifted], dim=2).reshape(n, -1, r, r)
        x = self.conv2(F.gelu(self.conv1(x)))
        return planes + self.out(F.gelu(x)).view(n, p, c, r, r).to(planes.dtype)
