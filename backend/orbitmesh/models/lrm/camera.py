"""Cameras in the reference's conventions.

World: +z up, the object in [-1, 1]^3. Cam-to-world extrinsics are OpenGL-style (the camera
looks down its -z axis, +y up); intrinsics are normalised by the image size.
- Source camera (the LRM's conditioning): 16 numbers, the 3x4 extrinsics row-major + fx, fy, cx, cy.
- Render camera: 25 numbers, the 4x4 extrinsics + the 3x3 normalised intrinsics.
The canonical source camera sits at (distance, 0, 0): the input view looks at the object from +x,
image right = world +y, image up = world +z.
"""

from __future__ import annotations

import math

import torch


def look_at(positions: torch.Tensor, target: torch.Tensor | None = None,
            up: torch.Tensor | None = None) -> torch.Tensor:
    """positions (M, 3) -> cam-to-world (M, 3, 4) looking at ``target`` (origin) with world ``up`` (+z)."""
    positions = positions.float()
    target = torch.zeros(3) if target is None else target.float()
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else up.float()
    z = positions - target
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.linalg.cross(up.expand_as(z), z)
    # Looking straight along ``up``: any right axis will do; take the one from world +y.
    fallback = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]).expand_as(z), z)
    x = torch.where(x.norm(dim=-1, keepdim=True) < 1e-6, fallback, x)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(z, x)
    y = y / y.norm(dim=-1, keepdim=True)
    return torch.stack([x, y, z, positions], dim=-1)


def orbit_positions(n: int, radius: float = 1.5, elevation_deg: float = 0.0, azimuth0_deg: float = 0.0) -> torch.Tensor:
    """(n, 3) positions on a circle around +z, starting at azimuth0 (0 = the input view at +x)."""
    el = math.radians(elevation_deg)
    pos = []
    for i in range(n):
        az = 2 * math.pi * i / n + math.radians(azimuth0_deg)
        pos.append([radius * math.cos(az) * math.cos(el), radius * math.sin(az) * math.cos(el), radius * math.sin(el)])
    return torch.tensor(pos, dtype=torch.float32)


def source_camera(distance: float = 1.0, focal: float = 0.75, batch: int = 1) -> torch.Tensor:
    """(batch, 16) canonical source camera."""
    ext = torch.tensor([[0, 0, 1, distance], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.float32)
    cam = torch.cat([ext.reshape(12), torch.tensor([focal, focal, 0.5, 0.5])])
    return cam.unsqueeze(0).repeat(batch, 1)


def render_cameras(extrinsics: torch.Tensor, focal: float = 0.75) -> torch.Tensor:
    """(M, 3, 4) cam-to-world -> (M, 25) render cameras with normalised intrinsics (fx = fy = focal)."""
    m = extrinsics.shape[0]
    bottom = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]]).expand(m, 1, 4)
    e = torch.cat([extrinsics.float(), bottom], dim=1)
    k = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32)
    return torch.cat([e.reshape(m, 16), k.reshape(1, 9).expand(m, 9)], dim=-1)


def orbit_cameras(n: int, radius: float = 1.5, elevation_deg: float = 0.0, focal: float = 0.75) -> torch.Tensor:
    """(n, 25) render cameras orbiting the object (the reference's default video orbit, without jitter)."""
    return render_cameras(look_at(orbit_positions(n, radius, elevation_deg)), focal)
