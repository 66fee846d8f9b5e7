"""The input photo on the surface it shows: one exactly known view painted over the model's colours.

A triplane model decodes colour from 24-64 px planes, so the side the photo shows comes out blurred;
yet the photo itself, seen from a camera we know exactly, is sharp. :func:`input_view_colors` takes the
baked model colour of every texel and, where the source camera sees the texel, replaces it with the
photo, through the quality mode's projector (:func:`orbitmesh.quality.project.observe`: the same
projection, facing test, depth test and edge-distance weight):

    w     = cos(view angle) ** angle_power * min(1, distance to the nearest edge / edge_px)
    alpha = smoothstep(min(1, w / full_weight))         (1: the photo alone, 0: the model alone)

"Edge" is the photo's silhouette, the mesh's own silhouette in the view and every depth jump of the
mesh there (an occlusion boundary), so the photo fades out smoothly wherever visibility ends instead of
stopping at a seam. Where the two mix, the photo is first colour-matched to the model (a per-channel gain
taking the photo's mean colour on the fully painted texels to the model's there), in proportion to
1 - alpha, so the transition shows no jump in tone; fully seen texels keep the photo's colours exactly,
hidden texels the model's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from orbitmesh.mesh.clean import vertex_normals
from orbitmesh.quality.project import ProjectionConfig, View, observe, view_stack
from orbitmesh.quality.raster import ViewRaster, rasterize


@dataclass
class InputTextureConfig:
    """``full_weight``: observations weighing this much take the photo alone; ``edge_fraction``: the fade
    inside an edge, as a share of the photo's width; ``depth_edge_px``: a depth step between neighbouring
    pixels larger than this many pixel footprints is an occlusion edge; ``min_cos``: grazing texels below
    it are not painted; the colour match uses texels with alpha >= ``match_alpha`` and keeps its gain in
    ``gain_range`` and its offset within +-``max_offset``; of the texels the photo replaces outright, every
    ``match_every``-th keeps its model colour for the match (see :func:`replaced_texels`)."""

    angle_power: float = 1.0
    full_weight: float = 0.35
    min_cos: float = 0.05
    edge_fraction: float = 0.005
    depth_edge_px: float = 6.0
    depth_tolerance_px: float = 1.5
    match_alpha: float = 0.9
    min_match_texels: int = 64
    gain_range: tuple[float, float] = (0.67, 1.5)
    max_offset: float = 0.15
    match_every: int = 8


@dataclass
class InputTextureResult:
    """``colors`` (T, 3) float32 in [0, 1] (the texels given, in order); ``alpha`` (T,) the photo's share;
    ``gain`` / ``offset`` (3,) the colour match photo -> model."""

    colors: np.ndarray
    alpha: np.ndarray
    gain: np.ndarray
    offset: np.ndarray
    seconds: float = 0.0

    def to_dict(self) -> dict:
        seen = self.alpha > 0
        return {"painted_fraction": round(float(seen.mean()) if len(seen) else 0.0, 4),
                "full_fraction": round(float((self.alpha >= 1.0).mean()) if len(seen) else 0.0, 4),
                "gain": [round(float(g), 4) for g in self.gain], "offset": [round(float(o), 4) for o in self.offset],
                "seconds": round(self.seconds, 3)}


def occlusion_edges(depth: torch.Tensor, focal: float, factor: float) -> torch.Tensor:
    """(S, S) bool: pixels of a view's depth map (inf: nothing) next to a depth step larger than ``factor``
    pixel footprints (depth / (focal * S)), or next to nothing at all (the mesh's own silhouette)."""
    size = depth.shape[0]
    finite = torch.isfinite(depth)
    d = torch.where(finite, depth, torch.zeros_like(depth))
    limit = factor * d / (focal * size)
    edge = ~finite
    for dim in (0, 1):
        for shift in (1, -1):
            nd = torch.roll(d, shift, dims=dim)
            nf = torch.roll(finite, shift, dims=dim)
            edge |= finite & (~nf | ((nd - d).abs() > limit))
    return edge


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def colour_match(photo: np.ndarray, model: np.ndarray, weight: np.ndarray, config: InputTextureConfig
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (gain, offset) taking the photo's weighted mean colour to the model's: a gain (exposure
    and white balance; a regression slope would mistake the model's blur for a contrast change), and an
    offset only for what a gain inside ``gain_range`` cannot reach. Identity with too few texels."""
    gain, offset = np.ones(3, np.float32), np.zeros(3, np.float32)
    if len(weight) < config.min_match_texels or float(weight.sum()) <= 0:
        return gain, offset
    w = weight / weight.sum()
    for ch in range(3):
        mp, mm = float((w * photo[:, ch]).sum()), float((w * model[:, ch]).sum())
        g = float(np.clip(mm / mp, *config.gain_range)) if mp > 1e-3 else 1.0
        gain[ch] = g
        offset[ch] = float(np.clip(mm - g * mp, -config.max_offset, config.max_offset))
    return gain, offset


@dataclass
class PreparedView:
    """The input view's work that needs the surface but not its UVs, so it can be done while they are made
    (:func:`prepare_view`): ``view`` with its mask cut at the mesh's outline and occlusion edges, the depth
    ``raster`` of the faces turned towards the camera, the sampling ``stack`` (:func:`view_stack`) and the
    projection settings."""

    view: View
    raster: ViewRaster
    stack: torch.Tensor
    projection: ProjectionConfig
    seconds: float = 0.0


def _facing(vertices: np.ndarray, faces: np.ndarray, camera) -> np.ndarray:
    """(M,) bool: the faces turned towards the camera (wound outward)."""
    tri = vertices[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return (normal * (np.asarray(camera.position, np.float32) - tri.mean(axis=1))).sum(-1) > 0


def prepare_view(vertices: np.ndarray, faces: np.ndarray, view: View, config: InputTextureConfig | None = None,
                 device: str | torch.device = "cpu") -> PreparedView:
    """The UV-free part of :func:`input_view_colors` for a surface (vertices (K, 3) / faces (M, 3) in the
    camera's world, wound outward): the same surface with its vertices split along UV seams may be the one
    painted later, since only the geometry matters here."""
    start = time.perf_counter()
    config = config or InputTextureConfig()
    vertices = np.asarray(vertices, np.float32)
    faces = np.asarray(faces, np.int64)
    size = view.rgb.shape[0]
    dev = torch.device(device)
    # the depth buffer from the faces turned towards the camera alone: on a closed surface the nearest one along
    # any ray is one of them, and the rasteriser's cost goes with the faces it is given
    raster = rasterize(torch.from_numpy(vertices).to(dev),
                       torch.from_numpy(faces[_facing(vertices, faces, view.camera)]).to(dev), view.camera, size,
                       device=dev)
    # Fade at the photo's outline, the mesh's outline in this view and its occlusion edges alike.
    edges = occlusion_edges(raster.depth, float(view.camera.intrinsics[0]), config.depth_edge_px).cpu().numpy()
    cut = View(view.rgb, np.asarray(view.mask, np.float32) * ~edges, view.camera, view.name)
    projection = ProjectionConfig(angle_power=config.angle_power, min_cos=config.min_cos,
                                  edge_px=max(1.0, config.edge_fraction * size), near_input_boost=0.0,
                                  depth_tolerance_px=config.depth_tolerance_px, min_mask_fraction=0.0)
    return PreparedView(cut, raster, view_stack(cut, projection, dev), projection,
                        seconds=time.perf_counter() - start)


@dataclass
class InputObservation:
    """What the input view sees of the texels: ``alpha`` (T,) float32 the photo's share of each (0: unseen,
    1: the photo alone), ``seen`` (P,) the indices of the texels with alpha > 0 and ``photo`` (P, 3) float32
    the photo's colours there."""

    alpha: np.ndarray
    seen: np.ndarray
    photo: np.ndarray
    seconds: float = 0.0


def observe_texels(vertices: np.ndarray, faces: np.ndarray, texel_face: np.ndarray, texel_bary: np.ndarray,
                   view: View, config: InputTextureConfig | None = None, device: str | torch.device = "cpu",
                   texel_points: np.ndarray | None = None, prepared: PreparedView | None = None
                   ) -> InputObservation:
    """The photo's share and colour of every texel (the first half of :func:`input_view_colors`, which
    describes the arguments): it needs no model colour."""
    start = time.perf_counter()
    config = config or InputTextureConfig()
    vertices = np.asarray(vertices, np.float32)
    faces = np.asarray(faces, np.int64)
    texel_face = np.asarray(texel_face, np.int64)
    alpha = np.zeros(len(texel_face), np.float32)
    # texels on faces turned towards the camera: the only ones it can see (about half; the rest are skipped)
    idx = np.flatnonzero(_facing(vertices, faces, view.camera)[texel_face])
    if len(idx) == 0:
        return InputObservation(alpha, idx, np.zeros((0, 3), np.float32), seconds=time.perf_counter() - start)
    if prepared is None:
        prepared = prepare_view(vertices, faces, view, config, device)
    else:
        start -= prepared.seconds  # its time is part of the painting's, wherever it was spent
    bary, on = np.asarray(texel_bary, np.float32)[idx], faces[texel_face[idx]]
    points = np.einsum("tk,tkd->td", bary, vertices[on]) if texel_points is None else \
        np.asarray(texel_points, np.float32)[idx]
    normals = np.einsum("tk,tkd->td", bary, vertex_normals(vertices, faces)[on])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)

    dev = torch.device(device)
    pts = torch.from_numpy(np.ascontiguousarray(points, np.float32)).to(dev)
    nrm = torch.from_numpy(np.ascontiguousarray(normals, np.float32)).to(dev)
    rgb, w = observe(prepared.view, pts, nrm, None, None, prepared.projection, raster=prepared.raster,
                     stack=prepared.stack)
    photo, w = rgb.cpu().numpy(), w.cpu().numpy()
    a = _smoothstep(w / config.full_weight).astype(np.float32)
    alpha[idx] = a
    seen = np.flatnonzero(a > 0)  # the rest keep the model colour
    return InputObservation(alpha, idx[seen], photo[seen], seconds=time.perf_counter() - start)


def replaced_texels(observation: InputObservation, config: InputTextureConfig | None = None) -> np.ndarray:
    """(T,) bool: the texels the photo replaces outright (alpha 1), whose model colour is then never used, so
    a bake need not compute it; but every ``match_every``-th of them is left out, for the colour match."""
    config = config or InputTextureConfig()
    full = np.flatnonzero(observation.alpha >= 1.0)
    out = np.zeros(len(observation.alpha), bool)
    out[full] = True
    out[full[::max(config.match_every, 1)]] = False
    return out


def paint(observation: InputObservation, model_colors: np.ndarray, config: InputTextureConfig | None = None,
          known: np.ndarray | None = None) -> InputTextureResult:
    """The texels' colours: the photo blended over ``model_colors`` (T, 3) by the observation's alpha (the
    second half of :func:`input_view_colors`). ``known`` (T,) bool: the texels whose model colour was
    computed (default: all); the others must be among :func:`replaced_texels`, and the colour match uses
    only known ones."""
    start = time.perf_counter()
    config = config or InputTextureConfig()
    model_colors = np.asarray(model_colors, np.float32)
    colors = model_colors.copy()
    idx, photo = observation.seen, observation.photo
    a = observation.alpha[idx]
    model = model_colors[idx]
    full = a >= config.match_alpha
    if known is not None:
        full &= known[idx]
    gain, offset = colour_match(photo[full], model[full], a[full], config)
    matched = np.clip(photo * gain + offset, 0.0, 1.0)
    a2 = a[:, None]
    photo_part = a2 * photo + (1.0 - a2) * matched  # the photo leans to the model's tone where it fades out
    colors[idx] = a2 * photo_part + (1.0 - a2) * model
    return InputTextureResult(colors, observation.alpha, gain, offset,
                              seconds=observation.seconds + time.perf_counter() - start)


def input_view_colors(vertices: np.ndarray, faces: np.ndarray, texel_face: np.ndarray, texel_bary: np.ndarray,
                      model_colors: np.ndarray, view: View, config: InputTextureConfig | None = None,
                      device: str | torch.device = "cpu", texel_points: np.ndarray | None = None,
                      prepared: PreparedView | None = None) -> InputTextureResult:
    """Texel colours with the input photo painted where the view sees them (see the module docstring).

    vertices (K, 3) / faces (M, 3): the mesh in the camera's world, wound outward; the texels are given
    as the face (T,) each lies on and its barycentrics (T, 3) there (a UV raster's ``face`` / ``bary``);
    model_colors (T, 3) in [0, 1] their baked colours; ``view`` the photo (square rgb (S, S, 3) float32 in
    [0, 1], mask (S, S) in [0, 1]) and its camera. Only texels on faces that face the camera are looked
    at; hidden texels keep their model colour exactly. ``texel_points`` (T, 3): the texels' surface points
    in the camera's world when the caller has them already (the bake does), else they are interpolated;
    ``prepared``: :func:`prepare_view` of this surface and view with the same ``config``, when made already.
    """
    observation = observe_texels(vertices, faces, texel_face, texel_bary, view, config, device, texel_points,
                                 prepared)
    return paint(observation, model_colors, config)
