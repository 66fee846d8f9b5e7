"""Texture from views: project posed images onto a UV-mapped mesh.

For every texel (its 3D surface point from the UV raster of :func:`orbitmesh.mesh.rasterize`)
and every view: project the point into the view; it is *seen* when it lies in front of the
camera, inside the frame and the view's foreground mask, faces the camera, and passes a
depth test against the mesh rasterised into that view. Its colour is the bilinear sample of
the frame. Each observation gets a weight

    w = cos(view angle) ** angle_power                  (head-on views are sharpest)
      * min(1, distance to the mask's edge / edge_px)   (silhouette pixels mix background)
      * frame weight                                    (the input view and the frames next to
                                                         it are the most reliable)

and the texel is the weighted mean of its observations raised to ``blend_power`` (>1 leans
on the best view, which keeps high-frequency texture sharp when views disagree slightly).
Texels no view sees are filled from ``fill_fn`` (the LRM's colour field), then every texel
outside the UV charts is filled from the nearest chart texel (seam dilation).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from orbitmesh.errors import InputError
from orbitmesh.mesh.bake import Raster, dilate
from orbitmesh.mesh.bake import rasterize as rasterize_uv
from orbitmesh.mesh.clean import vertex_normals
from orbitmesh.progress import ProgressCallback, null_progress
from orbitmesh.quality.cameras import Camera
from orbitmesh.quality.raster import ViewRaster, project_points, rasterize

STAGE = "project"
FillFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class View:
    """One posed image. ``rgb`` (H, W, 3) float32 in [0, 1] (object on white), ``mask`` (H, W)
    float32 foreground in [0, 1] (None: missing), ``weight`` a per-frame multiplier,
    ``azimuth_deg`` its nominal angle from the input view (for the near-input weight)."""

    rgb: np.ndarray | None
    mask: np.ndarray | None
    camera: Camera
    name: str = "view"
    weight: float = 1.0
    azimuth_deg: float | None = None


@dataclass
class ProjectionConfig:
    angle_power: float = 2.0
    min_cos: float = 0.1  # grazing observations below this are ignored
    edge_px: float = 3.0  # full weight this many frame pixels inside the silhouette
    near_input_boost: float = 2.0  # frames at azimuth 0 weigh (1 + boost), fading over near_input_deg
    near_input_deg: float = 45.0
    blend_power: float = 4.0
    depth_tolerance_px: float = 1.5  # depth test slack in pixel footprints (scaled by 1/cos)
    mask_threshold: float = 0.5
    min_mask_fraction: float = 1e-3  # frames whose foreground covers less are skipped
    fill_weight: float = 1e-3  # fill colour's weight: blends only where views barely see a texel
    margin: float = 1.0  # UV raster margin in texels (see orbitmesh.mesh.bake.rasterize)


@dataclass
class ProjectionResult:
    """``texture`` (S, S, 3) uint8 (row 0 = v 0); ``seen`` (S, S) bool texels some view saw;
    ``weight`` (S, S) float32 total weight; ``texel_points`` (T, 3) and ``texel_index`` (T,)
    the 3D point of each chart texel; ``views_used`` / ``views_skipped`` by name."""

    texture: np.ndarray
    seen: np.ndarray
    weight: np.ndarray
    texel_index: np.ndarray
    texel_points: np.ndarray
    views_used: list[str] = field(default_factory=list)
    views_skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def seen_fraction(self) -> float:
        """Fraction of the chart texels that at least one view saw."""
        return float(self.seen.reshape(-1)[self.texel_index].mean()) if len(self.texel_index) else 0.0


def usable_views(views: Sequence[View], config: ProjectionConfig) -> tuple[list[View], list[str]]:
    """Views with an image and a non-empty foreground; a warning for every other one."""
    keep, notes = [], []
    for v in views:
        if v.rgb is None:
            notes.append(f"frame {v.name} is missing; skipped")
        elif v.mask is None:
            notes.append(f"frame {v.name} has no foreground mask; skipped")
        elif float((np.asarray(v.mask) > config.mask_threshold).mean()) < config.min_mask_fraction:
            notes.append(f"frame {v.name} has an empty foreground; skipped")
        else:
            if v.rgb.shape[:2] != v.mask.shape[:2]:
                raise InputError(f"frame {v.name}: image {v.rgb.shape[:2]} and mask {v.mask.shape[:2]} differ "
                                 "in size", fix="give the mask at the frame's resolution")
            if v.rgb.shape[0] != v.rgb.shape[1]:
                raise InputError(f"frame {v.name} is {v.rgb.shape[1]}x{v.rgb.shape[0]}; frames must be square",
                                 fix="pad or crop the frames to a square")
            keep.append(v)
    for n in notes:
        warnings.warn(n, stacklevel=3)
    return keep, notes


def frame_weight(view: View, config: ProjectionConfig) -> float:
    w = float(view.weight)
    if view.azimuth_deg is not None and config.near_input_boost:
        d = abs((view.azimuth_deg + 180.0) % 360.0 - 180.0)
        w *= 1.0 + config.near_input_boost * math.exp(-0.5 * (d / config.near_input_deg) ** 2)
    return w


def _sample(image: torch.Tensor, xy: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear sample (C, S, S) at (T, 2) pixel coords (integers at pixel centres) -> (T, C)."""
    grid = ((xy + 0.5) / size * 2.0 - 1.0).view(1, 1, -1, 2)
    out = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T


def view_stack(view: View, config: ProjectionConfig, device: str | torch.device = "cpu") -> torch.Tensor:
    """(5, S, S) float32: a view's colours, mask and distance (frame pixels) from each foreground pixel to the
    nearest background pixel, the images :func:`observe` samples."""
    dev = torch.device(device)
    mask = torch.as_tensor(np.asarray(view.mask, np.float32), device=dev)
    fg = np.asarray(view.mask) > config.mask_threshold
    edge = torch.as_tensor(distance_transform_edt(fg).astype(np.float32), device=dev)
    return torch.cat([torch.as_tensor(np.asarray(view.rgb, np.float32), device=dev).permute(2, 0, 1),
                      mask[None], edge[None]])


def observe(view: View, points: torch.Tensor, normals: torch.Tensor, vertices: torch.Tensor,
            faces: torch.Tensor, config: ProjectionConfig, raster: ViewRaster | None = None,
            stack: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Colours (T, 3) and weights (T,) (0 where unseen) of ``points`` in one view. ``raster``: the mesh
    already rasterised into this view at the frame's size (else it is rasterised here); ``stack``: the
    view's :func:`view_stack` when made already."""
    dev = points.device
    size = view.rgb.shape[0]
    xy, depth = project_points(points, view.camera, size)
    cam_pos = torch.as_tensor(view.camera.position, dtype=torch.float32, device=dev)
    to_cam = cam_pos - points
    cos = (normals * to_cam).sum(-1) / to_cam.norm(dim=-1).clamp(min=1e-9)
    inframe = (xy >= -0.5).all(-1) & (xy <= size - 0.5).all(-1) & (depth > 0)
    # depth test against the mesh seen from this view (nearest pixel)
    if raster is None:
        raster = rasterize(vertices, faces, view.camera, size, device=dev)
    ij = xy.round().long().clamp(0, size - 1)
    zb = raster.depth[ij[:, 1], ij[:, 0]]
    footprint = depth / (view.camera.intrinsics[0] * size)
    tol = config.depth_tolerance_px * footprint / cos.clamp(min=0.2) + 1e-4
    visible = inframe & (cos > config.min_cos) & (depth <= zb + tol)
    s = _sample(view_stack(view, config, dev) if stack is None else stack, xy, size)
    rgb, m, d = s[:, :3], s[:, 3], s[:, 4]
    visible &= m > config.mask_threshold
    w = cos.clamp(min=0) ** config.angle_power * (d / config.edge_px).clamp(0, 1) * frame_weight(view, config)
    return rgb.clamp(0, 1), torch.where(visible, w, torch.zeros_like(w))


def texel_geometry(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, size: int, margin: float,
                   raster: Raster | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chart texels: flat index (T,), 3D points (T, 3) and unit normals (T, 3) (interpolated). ``raster``:
    the UV raster already made (the bake's), else it is made here."""
    r = raster if raster is not None else rasterize_uv(uvs, faces, size, margin=margin)
    tri = vertices[faces[r.face]].astype(np.float32)
    points = np.einsum("tk,tkd->td", r.bary, tri)
    vn = vertex_normals(vertices, faces)
    normals = np.einsum("tk,tkd->td", r.bary, vn[faces[r.face]])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return r.texel, points.astype(np.float32), normals.astype(np.float32)


def project_texture(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, views: Sequence[View],
                    size: int = 1024, *, fill_fn: FillFn | None = None, config: ProjectionConfig | None = None,
                    progress: ProgressCallback = null_progress, device: str | torch.device = "cpu",
                    render_vertices: np.ndarray | None = None) -> ProjectionResult:
    """Texture a UV mesh from posed views.

    vertices (K, 3) float32 in the cameras' world, faces (M, 3), uvs (K, 2) in [0, 1] (UV mesh:
    vertices split along seams, as :class:`orbitmesh.mesh.UVMesh`); ``fill_fn`` (N, 3) points ->
    (N, 3) colours in [0, 1] for texels no view sees (None: mid grey). ``progress('project',
    i, n)`` before each view (may raise JobCancelled). Frames with a missing image, a missing
    or an empty mask are skipped with a warning.
    """
    config = config or ProjectionConfig()
    vertices = np.asarray(vertices, np.float32)
    faces = np.asarray(faces, np.int64)
    uvs = np.asarray(uvs, np.float32)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise InputError("project_texture needs (K, 3) vertices and a non-empty (M, 3) face array",
                         fix="pass the UV mesh from orbitmesh.mesh.unwrap_uv")
    if uvs.shape != (len(vertices), 2):
        raise InputError(f"uvs must be ({len(vertices)}, 2), got {uvs.shape}", fix="pass one UV per vertex")
    used, notes = usable_views(views, config)
    texel, points, normals = texel_geometry(vertices, faces, uvs, size, config.margin)
    dev = torch.device(device)
    pts = torch.from_numpy(points).to(dev)
    nrm = torch.from_numpy(normals).to(dev)
    rv = torch.from_numpy(np.asarray(render_vertices if render_vertices is not None else vertices, np.float32)).to(dev)
    rf = torch.from_numpy(faces).to(dev)
    acc = torch.zeros((len(texel), 3), device=dev)
    wsum = torch.zeros(len(texel), device=dev)
    seen = torch.zeros(len(texel), dtype=torch.bool, device=dev)
    for i, view in enumerate(used):
        progress(STAGE, i, len(used), f"projecting {view.name}")
        rgb, w = observe(view, pts, nrm, rv, rf, config)
        seen |= w > 0
        wp = w ** config.blend_power
        acc += wp[:, None] * rgb
        wsum += wp
    progress(STAGE, len(used), len(used), "blending")
    colors = acc.cpu().numpy()
    weight = wsum.cpu().numpy()
    fill = np.full((len(texel), 3), 0.5, np.float32)
    fw = max(config.fill_weight, 0.0) ** config.blend_power  # in the same units as the view weights
    need = (weight <= 0) | (weight < 100.0 * fw)
    if fill_fn is not None and need.any():
        fill[need] = np.clip(np.asarray(fill_fn(points[need]), np.float32).reshape(-1, 3), 0, 1)
    out = (colors + fw * fill) / np.maximum(weight + fw, 1e-30)[:, None]
    out = np.where(weight[:, None] > 0, out, fill)
    image = np.zeros((size * size, 3), np.uint8)
    image[texel] = np.round(np.clip(out, 0, 1) * 255.0).astype(np.uint8)
    filled = np.zeros(size * size, bool)
    filled[texel] = True
    image = dilate(image.reshape(size, size, 3), filled.reshape(size, size))
    seen_img = np.zeros(size * size, bool)
    seen_img[texel] = seen.cpu().numpy()
    weight_img = np.zeros(size * size, np.float32)
    weight_img[texel] = weight
    return ProjectionResult(texture=image, seen=seen_img.reshape(size, size), weight=weight_img.reshape(size, size),
                            texel_index=texel, texel_points=points, views_used=[v.name for v in used],
                            views_skipped=[v.name for v in views if not any(v is u for u in used)], warnings=notes)
