"""An analytic textured shape (a sphere resting in a torus) for the demo, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orbitmesh.mesh.stats import MeshStats

SPHERE_CENTER = (0.0, 0.0, 0.2)
SPHERE_RADIUS = 0.45
TORUS_CENTER_Z = -0.35
TORUS_MAJOR, TORUS_MINOR = 0.6, 0.18


def sphere_torus_sdf(p: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) at (N, 3) points, z-up world."""
    p = np.asarray(p, np.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    cx, cy, cz = SPHERE_CENTER
    ds = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - SPHERE_RADIUS
    q = np.sqrt(x * x + y * y) - TORUS_MAJOR
    dt = np.sqrt(q * q + (z - TORUS_CENTER_Z) ** 2) - TORUS_MINOR
    return np.minimum(ds, dt)


def sphere_torus_field(resolution: int, bbox: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(R, R, R) float32 density (indexing 'ij'): minus the signed distance, surface at 0.

    Built slab by slab so a 512^3 field needs no float64 temporaries of the full size.
    """
    ax = np.linspace(bbox[0], bbox[1], resolution, dtype=np.float32)
    out = np.empty((resolution,) * 3, np.float32)
    y, z = np.meshgrid(ax, ax, indexing="ij")
    cx, cy, cz = SPHERE_CENTER
    for i, x in enumerate(ax):
        ds = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - SPHERE_RADIUS
        q = np.sqrt(x * x + y * y) - TORUS_MAJOR
        dt = np.sqrt(q * q + (z - TORUS_CENTER_Z) ** 2) - TORUS_MINOR
        out[i] = -np.minimum(ds, dt)
    return out


def positional_color(points: np.ndarray) -> np.ndarray:
    """(N, 3) points -> (N, 3) float32 colours in [0, 1]: smooth stripes that vary along every axis."""
    p = np.asarray(points, np.float32)
    r = 0.5 + 0.5 * np.sin(3.0 * p[:, 0] + 1.0)
    g = 0.5 + 0.5 * np.sin(4.0 * p[:, 1] - 2.0 * p[:, 2])
    b = 0.5 + 0.5 * np.cos(5.0 * p[:, 2] + 0.5 * p[:, 0])
    return np.stack([r, g, b], axis=1).astype(np.float32)


def write_demo(out_path: str | Path, *, resolution: int = 192, target_faces: int = 20000,
               texture_size: int = 1024) -> MeshStats:
    """Write the textured sphere+torus through the real mesh stage (.glb or .obj by suffix)."""
    from orbitmesh.mesh.api import field_to_glb

    density = sphere_torus_field(resolution)
    return field_to_glb(density, positional_color, threshold=0.0, target_faces=target_faces,
                        texture_size=texture_size, out_path=out_path)
