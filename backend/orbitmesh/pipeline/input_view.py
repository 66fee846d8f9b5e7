"""What the exactly known input view adds to a reconstruction: its silhouette and its photo.

* :class:`CarveStage` (stage ``carve``, every mode, setting ``carve``): the density grid cut to the
  input mask and the thin parts the model lost filled back in (:mod:`orbitmesh.quality.silhouette`).
* :func:`input_texture_adjust` (fast mode's ``mesh`` stage, setting ``input_texture``): the input photo,
  at the best resolution the original image offers, painted over the baked model colours wherever the
  source camera sees the surface (:mod:`orbitmesh.quality.input_texture`, through quality mode's
  projector). Quality mode projects the input view with its orbit views instead.

The source camera is the model's own (``config.source_camera_distance`` / ``source_focal``, the LRM's
1.0 / 0.75 when a model does not say): in the LRM's frame it sits on +x looking at the origin, z up; in
the pipeline's output frame (:mod:`orbitmesh.pipeline.reconstruct`) it sits on -y looking along +y. The
photo and the mask are framed as the model's input was (:func:`model_border`).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from orbitmesh.pipeline import modes
from orbitmesh.pipeline.orchestrator import StageContext

DEFAULT_SOURCE_DISTANCE = 1.0  # the LRM's canonical source camera (orbitmesh.quality.cameras)
DEFAULT_SOURCE_FOCAL = 0.75


def source_camera_params(config: Any) -> tuple[float, float]:
    """(distance, normalised focal length) of a model's input camera."""
    return (float(getattr(config, "source_camera_distance", DEFAULT_SOURCE_DISTANCE) or DEFAULT_SOURCE_DISTANCE),
            float(getattr(config, "source_focal", DEFAULT_SOURCE_FOCAL) or DEFAULT_SOURCE_FOCAL))


def source_camera(config: Any):
    """The model's input camera in the LRM frame (a :class:`orbitmesh.quality.cameras.Camera`)."""
    from orbitmesh.quality.cameras import Camera, look_at

    distance, focal = source_camera_params(config)
    return Camera(look_at((distance, 0.0, 0.0)), (focal, focal, 0.5, 0.5))


def model_border(config: Any, preprocess) -> float:
    """The border the model's input image was framed with: the preprocessing's, or, for a model with its
    own framing (TripoSR: ``config.foreground_ratio`` on ``config.background_grey``, see
    :func:`orbitmesh.pipeline.reconstruct.model_input`), 1 - its foreground ratio."""
    from orbitmesh.pipeline.reconstruct import own_framing

    framing = own_framing(config)
    if framing is None or preprocess.cutout is None:
        return float(preprocess.border_ratio)
    return 1.0 - framing[0]


def photo_size(preprocess, texture_size: int, border: float | None = None) -> int:
    """The input photo's size for texturing: the object at its native resolution in the original image,
    framed as the model saw it, at least the encoder-sized copy's and at most the texture's size."""
    encoder = preprocess.image.size[0]
    if preprocess.cutout is None:
        return encoder
    border = preprocess.border_ratio if border is None else border
    x0, y0, x1, y1 = preprocess.bbox
    native = round(max(x1 - x0, y1 - y0) / max(1.0 - border, 1e-3))
    return int(min(max(native, encoder), max(encoder, texture_size)))


def framed_cutout(preprocess, size: int, border: float):
    """PIL RGBA (size, size): the object's crop of the original image, recentred with ``border``: the
    encoder's copy itself when that is what it already is."""
    from orbitmesh.imaging.recentre import recentre

    if preprocess.cutout is None or (size == preprocess.rgba.size[0] and border == preprocess.border_ratio):
        return preprocess.rgba
    cut = preprocess.cutout
    x0, y0, x1, y1 = preprocess.bbox
    bw, bh = x1 - x0, y1 - y0
    mx, my = (cut.width - bw) // 2, (cut.height - bh) // 2  # the cutout's margin around the bbox
    return recentre(cut, (mx, my, mx + bw, my + bh), size, border)


def model_mask(config: Any, preprocess) -> np.ndarray:
    """(S, S) bool: the object's mask framed as the model's input was (the preprocessed mask itself unless
    the model frames the object its own way)."""
    border = model_border(config, preprocess)
    if border == preprocess.border_ratio:
        return np.asarray(preprocess.mask, bool)
    rgba = framed_cutout(preprocess, preprocess.rgba.size[0], border)
    return np.asarray(rgba.getchannel("A")) >= 128


def input_photo(preprocess, texture_size: int, camera, border: float | None = None) -> "View":  # noqa: F821
    """The input view as a :class:`orbitmesh.quality.project.View`: the object's crop of the original image
    recentred as the model's copy was (``border``; default the preprocessing's), at :func:`photo_size`
    (straight, not premultiplied, colours; the alpha as the mask)."""
    from orbitmesh.quality.project import View

    border = preprocess.border_ratio if border is None else border
    rgba = framed_cutout(preprocess, photo_size(preprocess, texture_size, border), border)
    arr = np.asarray(rgba.convert("RGBA"), np.float32) / 255.0
    return View(np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3]), camera, "input")


class InputTextureAdjust:
    """The ``texel_adjust`` of :func:`orbitmesh.mesh.field_to_glb` that paints the input photo over the baked
    model colours (the output-frame mesh turned into the LRM frame of the source camera). ``prepare`` starts
    the UV-free part (the view's depth buffer and edges) on a thread, so it runs while xatlas makes the UVs
    in its own process; ``replaced`` observes the texels before the bake and names those the photo replaces
    outright, so the model's colour field is not evaluated there. ``notes`` (a dict) receives what it did
    (``InputTextureResult.to_dict()`` plus the photo size)."""

    def __init__(self, view, *, device: str = "cpu", notes: dict | None = None) -> None:
        self.view, self.device, self.notes = view, device, notes
        self._prepared: Future | None = None
        self._observation, self._known = None, None  # what replaced() saw, for __call__

    def prepare(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        from orbitmesh.pipeline.reconstruct import lrm_points_from_output
        from orbitmesh.quality.input_texture import prepare_view

        # xatlas's child is forked while this thread may be inside torch: the child runs only xatlas and numpy
        # (never torch), so no lock this thread holds is needed there
        pool = ThreadPoolExecutor(1, thread_name_prefix="orbitmesh-input-view")
        self._prepared = pool.submit(prepare_view, lrm_points_from_output(vertices), faces, self.view,
                                     device=self.device)
        pool.shutdown(wait=False)

    def replaced(self, uvm, raster, points: np.ndarray) -> np.ndarray:
        """(T,) bool: the bake's texels the photo replaces outright (their model colour need not be baked)."""
        from orbitmesh.quality.input_texture import replaced_texels

        self._observation = self._observe(uvm, raster, points)
        self._known = ~replaced_texels(self._observation)
        return ~self._known

    def __call__(self, uvm, raster, points: np.ndarray, colors: np.ndarray) -> np.ndarray:
        from orbitmesh.quality.input_texture import paint

        observation = self._observation if self._observation is not None else self._observe(uvm, raster, points)
        res = paint(observation, colors, known=self._known)
        if self.notes is not None:
            self.notes.update(res.to_dict(), photo_size=int(self.view.rgb.shape[0]))
        return res.colors

    def _observe(self, uvm, raster, points: np.ndarray):
        from orbitmesh.pipeline.reconstruct import lrm_points_from_output
        from orbitmesh.quality.input_texture import observe_texels

        prepared = self._prepared.result() if self._prepared is not None else None  # re-raises its error
        # the bake's own texels (face + barycentrics and points), in the LRM frame
        return observe_texels(lrm_points_from_output(uvm.vertices), uvm.faces, raster.face, raster.bary, self.view,
                              device=self.device, texel_points=lrm_points_from_output(points), prepared=prepared)


def input_texture_adjust(state, texture_size: int, *, device: str = "cpu",
                         notes: dict | None = None) -> InputTextureAdjust:
    """The :class:`InputTextureAdjust` for a job's state: the input photo at :func:`photo_size` for
    ``texture_size``, framed as the model's input was."""
    config = state.lrm.config
    view = input_photo(state.preprocess, texture_size, source_camera(config), model_border(config, state.preprocess))
    return InputTextureAdjust(view, device=device, notes=notes)


class CarveStage:
    """``state.density`` cut to the input mask and filled where the model lost parts of it (see
    :func:`orbitmesh.quality.silhouette.carve_density`); records ``carve`` in job.json. With ``enabled``
    False it changes nothing (and records that)."""

    name = modes.CARVE
    needs = ("density", "bbox", "threshold", "lrm", "mask")
    gives = ("density",)

    def __init__(self, enabled: bool = True, config=None) -> None:
        self.enabled, self.config = enabled, config

    def run(self, ctx: StageContext) -> None:
        from orbitmesh.quality.silhouette import carve_density

        state = ctx.state
        if not self.enabled:
            ctx.job.update(carve={"enabled": False})
            return
        ctx.progress(self.name, 0, 1, "carving the shape to the input's silhouette")
        start = time.perf_counter()
        distance, focal = source_camera_params(state.lrm.config)
        mask = model_mask(state.lrm.config, state.preprocess) if state.preprocess is not None else state.mask
        # in place: the grid query's grid is this stage's to change (it replaces state.density); spares a copy
        res = carve_density(state.density, state.threshold, state.bbox, np.asarray(mask, bool),
                            distance=distance, focal=focal, config=self.config, inplace=True)
        state.density = res.density
        state.warn(*res.warnings)
        record = {"enabled": True, **res.to_dict(), "seconds": round(time.perf_counter() - start, 3)}
        state.grid_stats = {**state.grid_stats, "carve": record}
        ctx.job.update(carve=record)
        ctx.progress(self.name, 1, 1, "skipped" if res.skipped else
                     f"silhouette IoU {res.iou_before:.3f} -> {res.iou_after:.3f}")
