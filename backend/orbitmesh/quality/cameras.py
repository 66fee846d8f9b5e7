"""Orbit camera conventions, and the cameras of the SV3D frames in the reconstruction's frame.

Conventions (all in the LRM's world, the frame the triplane lives in):

* +z up, the object inside [-1, 1]^3, the LRM's input view seen from +x at distance 1.0 with
  fx = fy = 0.75 (normalised by the image size, about 67.4 degrees field of view).
* An orbit camera at (azimuth, elevation, radius) sits at
  radius * (cos(el) cos(az), cos(el) sin(az), sin(el)) and looks at the origin with world up +z.
  Azimuth 0 is the input view (+x); azimuth grows counter-clockwise seen from above (+x -> +y).
* Cam-to-world matrices are (3, 4) with columns right, up, backward, position (OpenGL/Blender
  axes; the camera looks down its -z), as :mod:`orbitmesh.models.lrm.camera` and
  :mod:`orbitmesh.data.render`. Intrinsics are (fx, fy, cx, cy) normalised by the image size;
  pixel (row i, column j) has its centre at ((j + 0.5) / W, (i + 0.5) / H), row 0 at the top.

SV3D (Stability-AI/generative-models, ``scripts/sampling/simple_video_sample.py``): the
sampling script takes only per-frame elevation (polar = 90 - elevation) and azimuth
(``linspace(0, 360, 22)[1:] % 360`` relative to the last frame, which is the input view); it
has no camera distance or focal length. The model was trained on object-centric orbit renders
with a fixed camera distance and field of view, and its input is normalised so the object
fills a fixed fraction of the 576x576 frame. So the frames' cameras are known only up to
that fixed camera; we start from the nominal SV3D camera (radius 2.0, 33.8 degree field of
view: focal 0.5 / tan(16.9 deg) = 1.645) -- which makes an object filling 85% of the frame
about 0.52 units in half-size, the same size the LRM reconstructs an object filling 80% of
its 67 degree input view at distance 1 -- and then refine an azimuth offset, the elevation,
the radius and the field of view by maximising the silhouette agreement between the
reconstructed mesh and the frames' foreground masks (:func:`orbitmesh.quality.align.align_cameras`).
Radius and field of view trade off almost exactly (only the perspective differs), so the
alignment moves mostly their ratio, the apparent ``scale``. The orbit ``direction`` (+1:
counter-clockwise seen from above) is a parameter too: the alignment also tries -1 and keeps
it only when the silhouettes clearly prefer it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from orbitmesh.models.lrm.camera import look_at as lrm_look_at

# Nominal SV3D orbit camera (see the module docstring).
SV3D_RADIUS = 2.0
SV3D_FOV_DEG = 33.8
SV3D_ELEVATION_DEG = 10.0
# The LRM's canonical source camera.
LRM_SOURCE_DISTANCE = 1.0
LRM_SOURCE_FOCAL = 0.75


def focal_from_fov(fov_deg: float) -> float:
    """Normalised focal length (fraction of the image size) of a square image's field of view."""
    return 0.5 / math.tan(math.radians(fov_deg) / 2.0)


def fov_from_focal(focal: float) -> float:
    return math.degrees(2.0 * math.atan(0.5 / focal))


def orbit_position(azimuth_deg: float, elevation_deg: float, radius: float) -> np.ndarray:
    """(3,) float64 camera position on the orbit sphere (see the conventions above)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def look_at(position, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(3, 4) float32 cam-to-world of a camera at ``position`` looking at ``target`` (the LRM's convention)."""
    return lrm_look_at(torch.tensor([position], dtype=torch.float32), torch.tensor(target, dtype=torch.float32),
                       torch.tensor(up, dtype=torch.float32))[0].numpy()


@dataclass(frozen=True)
class Camera:
    """One pinhole camera: ``c2w`` (3, 4) float32 and normalised intrinsics (fx, fy, cx, cy)."""

    c2w: np.ndarray
    intrinsics: tuple[float, float, float, float]

    @property
    def position(self) -> np.ndarray:
        return self.c2w[:, 3]

    def render_camera(self) -> torch.Tensor:
        """(25,) the LRM renderer's camera: 4x4 cam-to-world + 3x3 normalised intrinsics, flattened."""
        fx, fy, cx, cy = self.intrinsics
        e = np.concatenate([self.c2w, [[0, 0, 0, 1]]], axis=0).reshape(16)
        k = np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], np.float32)
        return torch.from_numpy(np.concatenate([e, k]).astype(np.float32))

    def to_dict(self) -> dict:
        return {"c2w": self.c2w.tolist(), "fx": self.intrinsics[0], "fy": self.intrinsics[1],
                "cx": self.intrinsics[2], "cy": self.intrinsics[3]}


def orbit_camera(azimuth_deg: float, elevation_deg: float, radius: float, fov_deg: float) -> Camera:
    f = focal_from_fov(fov_deg)
    return Camera(look_at(orbit_position(azimuth_deg, elevation_deg, radius)), (f, f, 0.5, 0.5))


def lrm_source_camera() -> Camera:
    """The LRM's input view: at (1, 0, 0), focal 0.75 (the view the reconstruction is exact in)."""
    return Camera(look_at((LRM_SOURCE_DISTANCE, 0.0, 0.0)), (LRM_SOURCE_FOCAL, LRM_SOURCE_FOCAL, 0.5, 0.5))


@dataclass(frozen=True)
class OrbitAlignment:
    """How the orbit frames sit in the reconstruction's frame.

    A frame with nominal azimuth ``a`` (degrees, 0 = the input view) is seen from
    ``direction * a + azimuth_offset_deg`` at ``elevation_deg``, ``radius`` and ``fov_deg``.
    ``elevation_deg=None`` keeps each frame's own elevation (sv3d_p orbits may vary it);
    a number replaces them all (a fixed-elevation orbit, whose elevation was a guess).
    """

    azimuth_offset_deg: float = 0.0
    elevation_deg: float | None = None
    elevation_offset_deg: float = 0.0
    radius: float = SV3D_RADIUS
    fov_deg: float = SV3D_FOV_DEG
    direction: int = 1

    @property
    def scale(self) -> float:
        """Apparent object size relative to the nominal SV3D camera (focal / radius ratio)."""
        return (focal_from_fov(self.fov_deg) / self.radius) / (focal_from_fov(SV3D_FOV_DEG) / SV3D_RADIUS)

    def camera(self, azimuth_deg: float, elevation_deg: float) -> Camera:
        el = (self.elevation_deg if self.elevation_deg is not None else elevation_deg) + self.elevation_offset_deg
        az = self.direction * azimuth_deg + self.azimuth_offset_deg
        return orbit_camera(az, el, self.radius, self.fov_deg)

    def cameras(self, frames: list[dict]) -> list[Camera]:
        """One camera per frame dict with ``azimuth_deg`` / ``elevation_deg`` (``orbit_cameras.json``)."""
        return [self.camera(float(f["azimuth_deg"]), float(f.get("elevation_deg", SV3D_ELEVATION_DEG)))
                for f in frames]

    def replace(self, **changes) -> "OrbitAlignment":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {**asdict(self), "scale": self.scale}

