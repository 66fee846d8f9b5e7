"""Seeded procedural objects (1-4 primitives, textured) and their multi-view renders.

``make_shape(seed)`` is a pure function of the seed: the same seed gives the same object on
every machine (numpy's PCG64 draws the parameters). ``make_sample(seed, ...)`` renders the
input view (the LRM's canonical source camera with a small jitter) and N supervision views
(random orbit cameras), and keeps the exact cameras and the ground-truth :class:`Shape`.

Seed ranges: training data uses seeds below ``HELD_OUT_SEED_START``; ``orbitmesh bench
quality`` draws its objects at seeds >= it, so the two never overlap.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from orbitmesh.data.render import SOURCE_INTRINSICS, RenderedView, orbit_camera, render_view
from orbitmesh.data.sdf import KINDS, TEXTURES, Part, Shape, grid_points

HELD_OUT_SEED_START = 1_000_000
KIND_WEIGHTS = (0.16, 0.16, 0.14, 0.14, 0.12, 0.12, 0.16)
PART_COUNT_WEIGHTS = (0.25, 0.3, 0.25, 0.2)  # 1, 2, 3, 4 parts
TEXTURE_WEIGHTS = (0.4, 0.2, 0.2, 0.2)


@dataclass
class ProceduralConfig:
    """How objects are drawn and rendered.

    ``radius``: objects are rescaled so their bounding sphere (around the bounding-box
    centre, at the origin) has a radius in this range; 0.55 keeps them inside the source
    camera's view at distance 1.0. Supervision cameras orbit at ``view_distance`` with
    elevations in ``elevation_range`` degrees.
    """

    input_size: int = 128
    input_supersample: int = 2
    input_jitter_deg: float = 2.0
    source_distance: float = 1.0
    view_size: int = 64
    views: int = 6
    view_distance: float = 1.5
    elevation_range: tuple[float, float] = (-20.0, 45.0)
    radius: tuple[float, float] = (0.42, 0.52)
    include_input_view: bool = True


def _rotation(rng: np.random.Generator) -> torch.Tensor:
    """A uniformly random rotation (3, 3) from a random unit quaternion."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return torch.tensor(r, dtype=torch.float32)


def _color(rng: np.random.Generator) -> tuple[float, float, float]:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.35, 0.9), rng.uniform(0.45, 0.95)
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def _params(kind: str, rng: np.random.Generator) -> tuple[float, ...]:
    u = rng.uniform
    if kind == "sphere":
        return (u(0.2, 0.42),)
    if kind == "box":
        return (u(0.1, 0.38), u(0.1, 0.38), u(0.1, 0.38))
    if kind == "rounded_box":
        half = (u(0.12, 0.38), u(0.12, 0.38), u(0.12, 0.38))
        return (*half, u(0.02, 0.5 * min(half)))
    if kind == "cylinder":
        return (u(0.1, 0.32), u(0.1, 0.38))
    if kind == "cone":
        r_bottom = u(0.15, 0.35)
        return (u(0.15, 0.38), r_bottom, u(0.0, 0.6) * r_bottom)
    if kind == "torus":
        major = u(0.2, 0.34)
        return (major, u(0.05, min(0.13, 0.6 * major)))
    return (u(0.1, 0.32), u(0.08, 0.22))  # capsule: half length, radius


def _part(rng: np.random.Generator, index: int) -> Part:
    kind = KINDS[rng.choice(len(KINDS), p=KIND_WEIGHTS)]
    params = _params(kind, rng)
    if index == 0:
        translation = torch.zeros(3)
    else:  # attach near the first part so the parts touch or overlap
        direction = rng.normal(size=3)
        translation = torch.tensor(direction / np.linalg.norm(direction) * rng.uniform(0.15, 0.42),
                                   dtype=torch.float32)
    color_a = _color(rng)
    texture = TEXTURES[rng.choice(len(TEXTURES), p=TEXTURE_WEIGHTS)]
    color_b = _color(rng) if texture != "solid" else color_a
    return Part(kind=kind, params=params, rotation=_rotation(rng), translation=translation,
                color_a=color_a, color_b=color_b, texture=texture, frequency=float(rng.uniform(3.0, 8.0)),
                texture_axis=int(rng.integers(0, 3)))


def make_shape(seed: int, radius: tuple[float, float] = (0.42, 0.52)) -> Shape:
    """The procedural object of ``seed``: 1-4 primitives, recentred and scaled into the box."""
    rng = np.random.default_rng(seed)
    count = 1 + int(rng.choice(4, p=PART_COUNT_WEIGHTS))
    parts = [_part(rng, i) for i in range(count)]
    smooth = 0.0 if rng.uniform() < 0.5 else float(rng.uniform(0.03, 0.12))
    target_radius = float(rng.uniform(*radius))
    shape = Shape(parts, smoothness=smooth)
    # Recentre on the bounding box of the occupied voxels and scale to the target radius.
    res, extent = 48, 1.6
    pts = grid_points(res, -extent, extent)
    inside = pts[shape.sdf(pts) < 0]
    if inside.shape[0] == 0:  # cannot happen with the size ranges above; keep the object visible anyway
        inside = torch.zeros(1, 3)
    centre = 0.5 * (inside.min(0).values + inside.max(0).values)
    half_voxel_diag = math.sqrt(3) * extent / res
    bound = float((inside - centre).norm(dim=-1).max()) + half_voxel_diag
    shape.scale = target_radius / bound
    shape.offset = -centre * shape.scale
    return shape


@dataclass
class Sample:
    """One training/evaluation object.

    ``input``: the input view (``input_size``^2); ``views``: supervision views; ``source_c2w`` is
    the (jittered) camera of the input view; ``shape`` the ground truth.
    """

    seed: int
    shape: Shape
    input: RenderedView
    views: list[RenderedView] = field(default_factory=list)


def input_camera(rng: np.random.Generator, config: ProceduralConfig) -> torch.Tensor:
    """The source camera with a small random azimuth/elevation jitter (degrees)."""
    j = config.input_jitter_deg
    az, el = (rng.uniform(-j, j), rng.uniform(-j, j)) if j > 0 else (0.0, 0.0)
    return orbit_camera(az, el, config.source_distance)


def view_cameras(rng: np.random.Generator, count: int, config: ProceduralConfig) -> list[torch.Tensor]:
    """``count`` supervision cameras: stratified azimuths (random phase), random elevations."""
    phase = rng.uniform(0, 360)
    cams = []
    for i in range(count):
        az = phase + 360.0 * (i + rng.uniform(0.1, 0.9)) / count
        el = rng.uniform(*config.elevation_range)
        cams.append(orbit_camera(az % 360.0, el, config.view_distance))
    return cams


def make_sample(seed: int, config: ProceduralConfig | None = None) -> Sample:
    """Render the object of ``seed`` from its input camera and ``config.views`` orbit cameras."""
    config = config or ProceduralConfig()
    shape = make_shape(seed, config.radius)
    rng = np.random.default_rng([seed, 1])  # camera stream, independent of the shape draws
    src = input_camera(rng, config)
    inp = render_view(shape, src, config.input_size, SOURCE_INTRINSICS, supersample=config.input_supersample)
    n_orbit = config.views - (1 if config.include_input_view else 0)
    views = [render_view(shape, c2w, config.view_size, SOURCE_INTRINSICS) for c2w in view_cameras(rng, n_orbit, config)]
    if config.include_input_view:
        views.insert(0, render_view(shape, src, config.view_size, SOURCE_INTRINSICS, supersample=2))
    return Sample(seed, shape, inp, views)


def surface_points(shape: Shape, count: int, rng: np.random.Generator) -> torch.Tensor:
    """(count, 3) float32 points on the surface: random candidates projected along the SDF gradient."""
    cand = torch.tensor(rng.uniform(-0.6, 0.6, size=(count * 4, 3)), dtype=torch.float32)
    for _ in range(4):
        cand = cand - shape.sdf(cand)[:, None] * shape.normals(cand)
    close = cand[shape.sdf(cand).abs() < 2e-3]
    if close.shape[0] < count:  # rare (tiny objects): keep the best of the rest
        rest = cand[shape.sdf(cand).abs().argsort()]
        close = torch.cat([close, rest[: count - close.shape[0]]])
    order = torch.randperm(close.shape[0], generator=torch.Generator().manual_seed(int(rng.integers(1 << 31))))
    return close[order[:count]]


def occupancy_points(shape: Shape, count: int, rng: np.random.Generator, near_surface: float = 0.6,
                     sigma: float = 0.03, box: float = 0.65, far: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Points for 3D supervision: ``near_surface`` of them jittered around the surface, ``far`` uniform
    in [-1, 1]^3 and the rest uniform in [-box, box]^3. Returns points (count, 3) float32 and
    occupancy (count,) float32 in {0, 1}."""
    n_near, n_far = int(count * near_surface), int(count * far)
    near = surface_points(shape, n_near, rng) + sigma * torch.tensor(rng.normal(size=(n_near, 3)), dtype=torch.float32)
    mid = torch.tensor(rng.uniform(-box, box, size=(count - n_near - n_far, 3)), dtype=torch.float32)
    out = torch.tensor(rng.uniform(-1, 1, size=(n_far, 3)), dtype=torch.float32)
    pts = torch.cat([near, mid, out]).clamp(-1.0, 1.0)
    return pts, shape.occupancy(pts).to(torch.float32)
