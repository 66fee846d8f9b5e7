"""Signed distance functions of primitives, their (smooth) unions and procedural surface colour.

Everything is torch and works on ``(N, 3) float32`` points in world units. A :class:`Shape`
is a small list of posed primitives; ``shape.sdf(points)`` is exact for a hard union of
exact primitive SDFs (and a close bound for smooth unions and the cone), so the sphere
tracer in :mod:`orbitmesh.data.render` can step by it safely with a relaxation factor.
Formulas follow the standard closed forms (Quilez, "distance functions").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

KINDS = ("sphere", "box", "rounded_box", "cylinder", "cone", "torus", "capsule")
TEXTURES = ("solid", "stripes", "checker", "gradient")


def _length(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=-1)


def sd_sphere(p: torch.Tensor, r: float) -> torch.Tensor:
    return _length(p) - r


def sd_box(p: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Exact box SDF; ``half`` (3,) half extents."""
    q = p.abs() - half
    return _length(q.clamp(min=0)) + q.max(dim=-1).values.clamp(max=0)


def sd_rounded_box(p: torch.Tensor, half: torch.Tensor, radius: float) -> torch.Tensor:
    """Box with edges rounded by ``radius``; the outer half extents stay ``half``."""
    return sd_box(p, half - radius) - radius


def sd_cylinder(p: torch.Tensor, radius: float, half_height: float) -> torch.Tensor:
    """Capped cylinder along z."""
    d = torch.stack([_length(p[:, :2]) - radius, p[:, 2].abs() - half_height], dim=-1)
    return _length(d.clamp(min=0)) + d.max(dim=-1).values.clamp(max=0)


def sd_capped_cone(p: torch.Tensor, half_height: float, r_bottom: float, r_top: float) -> torch.Tensor:
    """Exact capped cone along z: radius ``r_bottom`` at z=-h, ``r_top`` at z=+h."""
    h = half_height
    q = torch.stack([_length(p[:, :2]), p[:, 2]], dim=-1)
    k1 = torch.tensor([r_top, h], dtype=p.dtype, device=p.device)
    k2 = torch.tensor([r_top - r_bottom, 2.0 * h], dtype=p.dtype, device=p.device)
    rad = torch.where(q[:, 1] < 0, torch.full_like(q[:, 0], r_bottom), torch.full_like(q[:, 0], r_top))
    ca = torch.stack([q[:, 0] - torch.minimum(q[:, 0], rad), q[:, 1].abs() - h], dim=-1)
    t = (((k1 - q) * k2).sum(-1) / (k2 * k2).sum()).clamp(0.0, 1.0)
    cb = q - k1 + k2 * t[:, None]
    s = torch.where((cb[:, 0] < 0) & (ca[:, 1] < 0), -1.0, 1.0)
    return s * torch.sqrt(torch.minimum((ca * ca).sum(-1), (cb * cb).sum(-1)))


def sd_torus(p: torch.Tensor, major: float, minor: float) -> torch.Tensor:
    """Torus in the xy plane around z."""
    q = torch.stack([_length(p[:, :2]) - major, p[:, 2]], dim=-1)
    return _length(q) - minor


def sd_capsule(p: torch.Tensor, half_length: float, radius: float) -> torch.Tensor:
    """Capsule: segment from z=-h to z=+h, swept by ``radius``."""
    z = p[:, 2].clamp(-half_length, half_length)
    return _length(p - torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], dim=-1)) - radius


def smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Polynomial smooth minimum; returns ``(value, h)`` where ``h`` in [0,1] is b's blend weight."""
    if k <= 0:
        return torch.minimum(a, b), (b < a).to(a.dtype)
    h = (0.5 + 0.5 * (a - b) / k).clamp(0.0, 1.0)
    return torch.lerp(a, b, h) - k * h * (1.0 - h), h


@dataclass
class Part:
    """One posed primitive with its colours and texture.

    ``params``: kind-specific sizes (see :meth:`local_sdf`); ``rotation`` (3, 3) maps local to
    world (world = R @ local + t); colours are linear RGB in [0, 1].
    """

    kind: str
    params: tuple[float, ...]
    rotation: torch.Tensor
    translation: torch.Tensor
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    texture: str = "solid"
    frequency: float = 4.0
    texture_axis: int = 2

    def to_local(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world -> (N, 3) local (R^T (p - t), written row-wise as (p - t) @ R)."""
        return (points - self.translation) @ self.rotation

    def local_sdf(self, q: torch.Tensor) -> torch.Tensor:
        a = self.params
        if self.kind == "sphere":
            return sd_sphere(q, a[0])
        if self.kind == "box":
            return sd_box(q, torch.tensor(a[:3], dtype=q.dtype, device=q.device))
        if self.kind == "rounded_box":
            return sd_rounded_box(q, torch.tensor(a[:3], dtype=q.dtype, device=q.device), a[3])
        if self.kind == "cylinder":
            return sd_cylinder(q, a[0], a[1])
        if self.kind == "cone":
            return sd_capped_cone(q, a[0], a[1], a[2])
        if self.kind == "torus":
            return sd_torus(q, a[0], a[1])
        if self.kind == "capsule":
            return sd_capsule(q, a[0], a[1])
        raise ValueError(f"unknown primitive kind {self.kind!r}")

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        return self.local_sdf(self.to_local(points))

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, 3) albedo from the part's procedural texture (in local coords)."""
        q = self.to_local(points)
        ca = torch.tensor(self.color_a, dtype=points.dtype, device=points.device)
        cb = torch.tensor(self.color_b, dtype=points.dtype, device=points.device)
        if self.texture == "solid":
            w = torch.zeros_like(q[:, 0])
        elif self.texture == "stripes":
            w = (torch.floor(q[:, self.texture_axis] * self.frequency) % 2 == 0).to(q.dtype)
        elif self.texture == "checker":
            cells = torch.floor(q * self.frequency).sum(-1)
            w = (cells % 2 == 0).to(q.dtype)
        elif self.texture == "gradient":
            w = (0.5 + q[:, self.texture_axis] * self.frequency / 4.0).clamp(0.0, 1.0)
        else:
            raise ValueError(f"unknown texture {self.texture!r}")
        return torch.lerp(ca.expand_as(q), cb.expand_as(q), w[:, None])


@dataclass
class Shape:
    """A union of posed parts, then scaled by ``scale`` and moved by ``offset``.

    world point p -> shape frame (p - offset) / scale; distances are multiplied back by
    ``scale`` so the SDF stays a true distance in world units.
    """

    parts: list[Part]
    smoothness: float = 0.0
    scale: float = 1.0
    offset: torch.Tensor = field(default_factory=lambda: torch.zeros(3))

    def _frame(self, points: torch.Tensor) -> torch.Tensor:
        return (points - self.offset.to(points)) / self.scale

    def _union(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape-frame SDF (N,) and per-part blend weights (N, P) used for colours."""
        d = self.parts[0].sdf(q)
        weights = [torch.ones_like(d)]
        for part in self.parts[1:]:
            dp = part.sdf(q)
            d, h = smooth_min(d, dp, self.smoothness)
            weights = [w * (1.0 - h) for w in weights] + [h]
        return d, torch.stack(weights, dim=-1)

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N,) signed distance (negative inside)."""
        return self._union(self._frame(points))[0] * self.scale

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points (on or near the surface) -> (N, 3) albedo in [0, 1]."""
        q = self._frame(points)
        _, w = self._union(q)
        out = torch.zeros_like(q)
        for i, part in enumerate(self.parts):
            out = out + w[:, i : i + 1] * part.albedo(q)
        return out.clamp(0.0, 1.0)

    def normals(self, points: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """(N, 3) unit outward normals by central differences of the SDF."""
        offsets = torch.eye(3, dtype=points.dtype, device=points.device) * eps
        grads = [self.sdf(points + o) - self.sdf(points - o) for o in offsets]
        g = torch.stack(grads, dim=-1)
        return g / _length(g).clamp(min=1e-12)[:, None]

    def occupancy(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) bool, True inside."""
        return self.sdf(points) < 0

    def to_dict(self) -> dict:
        """JSON-able description (for caches and model cards)."""
        return {
            "smoothness": self.smoothness, "scale": self.scale, "offset": self.offset.tolist(),
            "parts": [{"kind": p.kind, "params": list(p.params), "rotation": p.rotation.tolist(),
                       "translation": p.translation.tolist(), "color_a": list(p.color_a),
                       "color_b": list(p.color_b), "texture": p.texture, "frequency": p.frequency,
                       "texture_axis": p.texture_axis} for p in self.parts],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Shape":
        parts = [Part(kind=p["kind"], params=tuple(p["params"]), rotation=torch.tensor(p["rotation"]),
                      translation=torch.tensor(p["translation"]), color_a=tuple(p["color_a"]),
                      color_b=tuple(p["color_b"]), texture=p["texture"], frequency=p["frequency"],
                      texture_axis=p["texture_axis"]) for p in d["parts"]]
        return cls(parts, d["smoothness"], d["scale"], torch.tensor(d["offset"]))


def grid_points(resolution: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """(R^3, 3) voxel-centre points of a regular grid over [lo, hi]^3, 'ij' order (x slowest)."""
    step = (hi - lo) / resolution
    axis = lo + step * (torch.arange(resolution, dtype=torch.float32) + 0.5)
    gx, gy, gz = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([gx, gy, gz], dim=-1).reshape(-1, 3)
