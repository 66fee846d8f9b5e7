"""Quality mode's own stages: align, refine and the mesh stage that projects the orbit views.

The mode runs (see :mod:`orbitmesh.pipeline.modes`): [text_to_image] -> preprocess -> orbit (SV3D,
21 frames) -> lrm (triplane) -> align (frame masks, cameras fitted by silhouettes) -> refine (the triplane
optimised against the frames) -> grid_query -> mesh (extract, clean, decimate, UV, texture
projected from the frames + the input view, unseen texels from the colour field) -> export.

Job folder: ``orbit_NN.png`` + ``orbit_cameras.json`` (orbit stage), ``mask_NN.png``,
``aligned_cameras.json``, ``render_before.png`` / ``render_after.png`` (4 views of the triplane
before and after refinement, over the frames they are compared with), ``texture.png``,
``model.glb``. Frames: the mesh and the texture use the LRM's world (cameras documented in
:mod:`orbitmesh.quality.cameras`); the GLB is in the output frame of
:mod:`orbitmesh.pipeline.reconstruct` like the fast mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from orbitmesh.pipeline import modes
from orbitmesh.pipeline.orchestrator import StageContext
from orbitmesh.pipeline.output import GLB_NAME
from orbitmesh.quality.align import AlignConfig
from orbitmesh.quality.project import ProjectionConfig
from orbitmesh.quality.refine import RefineConfig

CAMERAS_NAME = "aligned_cameras.json"


@dataclass
class QualityConfig:
    """Quality-mode settings. ``refine.steps=-1`` (the default) picks ``gpu_refine_steps`` on a GPU and
    ``cpu_refine_steps`` on the CPU."""

    align: AlignConfig = field(default_factory=AlignConfig)
    refine: RefineConfig = field(default_factory=lambda: RefineConfig(steps=-1))
    project: ProjectionConfig = field(default_factory=ProjectionConfig)
    align_grid: int = 96  # density grid for the coarse mesh the cameras are aligned against
    render_size: int = 128  # before/after renders
    input_view_weight: float = 2.0  # the input image (at the LRM's source camera) as a view
    gpu_refine_steps: int = 300
    cpu_refine_steps: int = 30


def frame_mask(rgb: np.ndarray, threshold: float = 0.06) -> np.ndarray:
    """(H, W, 3) float in [0, 1], object on white -> (H, W) float32 foreground in {0, 1}:
    pixels visibly off white, the main components kept and holes filled."""
    from scipy import ndimage

    from orbitmesh.imaging.morphology import keep_main_components

    fg = (1.0 - np.asarray(rgb, np.float32)).max(axis=-1) > threshold
    if not fg.any():
        return fg.astype(np.float32)
    fg = keep_main_components(fg)  # drops specks and stray highlights
    return ndimage.binary_fill_holes(fg).astype(np.float32)


def output_points_from_lrm(points: np.ndarray) -> np.ndarray:
    """Inverse of :func:`orbitmesh.pipeline.reconstruct.lrm_points_from_output`: (x, y, z)_out = (y, -x, z)_lrm."""
    return np.stack([points[..., 1], -points[..., 0], points[..., 2]], -1)


def _coarse_mesh(ctx: StageContext, resolution: int, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """A quick mesh of the current triplane, in the LRM's frame."""
    from orbitmesh.mesh import clean_mesh, decimate, extract_surface
    from orbitmesh.pipeline.reconstruct import density_grid, lrm_points_from_output, mesh_threshold

    model, planes = ctx.state.lrm, ctx.state.planes
    density = density_grid(model, planes, resolution)
    threshold = mesh_threshold(model.config, density)
    ex = extract_surface(density, threshold, bbox=(model.config.bbox_min, model.config.bbox_max),
                         target_faces=None, close_boundary=True)
    v, f, _ = clean_mesh(ex.vertices, ex.faces)
    if len(f) > max_faces:
        v, f = decimate(v, f, max_faces)
    return lrm_points_from_output(v).astype(np.float32), np.asarray(f, np.int64)


class AlignStage:
    """Frames -> masks (``mask_NN.png``) and cameras aligned to the reconstruction
    (``aligned_cameras.json``); ``state.quality_views`` is the list of posed views."""

    name = modes.ALIGN
    needs = ("orbit", "lrm", "planes")
    gives = ("quality_views", "alignment")

    def __init__(self, config: QualityConfig, device: str = "cpu") -> None:
        self.config, self.device = config, device

    def run(self, ctx: StageContext) -> None:
        from orbitmesh.quality.align import AlignFrame, align_cameras
        from orbitmesh.quality.cameras import OrbitAlignment, lrm_source_camera
        from orbitmesh.quality.project import View

        state = ctx.state
        orbit = state.orbit
        ctx.progress(self.name, 0, 1, "foreground masks")
        rgbs = [np.asarray(im.convert("RGB"), np.float32) / 255.0 for im in orbit.frames]
        masks = [frame_mask(rgb) for rgb in rgbs]
        for i, m in enumerate(masks):
            ctx.job.save_image(f"mask_{i:02d}.png", Image.fromarray((m * 255).astype(np.uint8), "L"))
        frames = [AlignFrame(m, float(c["azimuth_deg"]), float(c["elevation_deg"]), f"orbit_{i:02d}")
                  for i, (m, c) in enumerate(zip(masks, orbit.cameras))]
        nominal = orbit.cameras[0]
        init = OrbitAlignment(radius=float(nominal.get("radius", 2.0)), fov_deg=float(nominal.get("fov_deg", 33.8)))
        v, f = _coarse_mesh(ctx, self.config.align_grid, self.config.align.max_faces)
        res = align_cameras(v, f, frames, init, self.config.align, ctx.progress, device=self.device)
        state.warn(*res.warnings)
        views = []
        for fr, rgb, mask in zip(frames, rgbs, masks):
            cam = res.alignment.camera(fr.azimuth_deg, fr.elevation_deg)
            views.append(View(rgb, mask, cam, fr.name, azimuth_deg=fr.azimuth_deg))
        image, in_mask = state.image, state.mask
        if image is not None and in_mask is not None:  # the input itself, exactly at the LRM's camera
            views.append(View(np.asarray(image.convert("RGB"), np.float32) / 255.0, np.asarray(in_mask, np.float32),
                              lrm_source_camera(), "input", weight=self.config.input_view_weight, azimuth_deg=0.0))
        state.quality_views, state.alignment = views, res
        ctx.job.write_json(CAMERAS_NAME, {
            "convention": ("LRM world: +z up, object in [-1, 1]^3, the input view from +x; c2w columns = right, up, "
                           "backward, position (OpenGL axes); fx, fy, cx, cy normalised by the image size; "
                           "see orbitmesh.quality.cameras"),
            **res.to_dict(),
            "frames": [{"name": v.name, "file": f"{v.name}.png" if v.name != "input" else None, **v.camera.to_dict()}
                       for v in views]})
        ctx.job.update(align={"iou_before": round(res.iou_before, 4), "iou_after": round(res.iou_after, 4),
                              "alignment": res.alignment.to_dict(), "skipped": res.skipped})


def _strip(images: list[np.ndarray]) -> Image.Image:
    return Image.fromarray((np.clip(np.concatenate(images, axis=1), 0, 1) * 255).round().astype(np.uint8), "RGB")


class RefineStage:
    """Optimise ``state.planes`` against the aligned views; writes before/after renders."""

    name = modes.REFINE
    needs = ("alignment", "quality_views", "lrm", "planes")
    gives = ("planes",)

    def __init__(self, config: QualityConfig, device: str = "cpu") -> None:
        self.config, self.device = config, device

    def run(self, ctx: StageContext) -> None:
        from dataclasses import replace

        from orbitmesh.quality.refine import TriplaneField, make_targets, refine_triplane, render_views, silhouette_iou

        cfg = self.config.refine
        if cfg.steps < 0:
            cfg = replace(cfg, steps=self.config.cpu_refine_steps if self.device == "cpu" else
                          self.config.gpu_refine_steps)
        skipped = set(ctx.state.alignment.skipped)  # missing/empty foreground: not a target either
        views = [v for v in ctx.state.quality_views
                 if v.name != "input" and v.name not in skipped and v.mask is not None and v.rgb is not None]
        planes, model = ctx.state.planes, ctx.state.lrm
        field_ = TriplaneField.from_lrm(model)
        targets = make_targets([v.rgb for v in views], [v.mask for v in views], [v.camera for v in views],
                               cfg.image_size, device=planes.device)
        show = np.linspace(0, len(views), 4, endpoint=False).astype(int)
        small = make_targets([views[i].rgb for i in show], [views[i].mask for i in show],
                             [views[i].camera for i in show], self.config.render_size, device=planes.device)
        # IoU before/after on a 64-pixel copy of the targets: a full-size render of 21 views costs more
        # than the refinement itself on a CPU
        check = make_targets([v.rgb for v in views], [v.mask for v in views], [v.camera for v in views],
                             min(64, cfg.image_size), device=planes.device)
        samples = 16
        _, op0 = render_views(field_, planes, check, samples)
        before = silhouette_iou(op0, check.mask)
        rgb0, _ = render_views(field_, planes, small, samples)
        res = refine_triplane(field_, planes, targets, cfg, ctx.progress)
        _, op1 = render_views(field_, res.planes, check, samples)
        after = silhouette_iou(op1, check.mask)
        rgb1, _ = render_views(field_, res.planes, small, samples)
        frames = small.rgb.reshape(len(show), small.size, small.size, 3).cpu().numpy()
        for name, rgb in (("render_before.png", rgb0), ("render_after.png", rgb1)):
            ctx.job.save_image(name, _strip([np.concatenate([f, r], axis=0)
                                             for f, r in zip(frames, rgb.cpu().numpy())]))
        ctx.state.planes = res.planes
        ctx.job.update(refine={"steps": cfg.steps, "seconds": round(res.seconds, 3),
                               "silhouette_iou_before": round(before, 4), "silhouette_iou_after": round(after, 4),
                               "final_loss": res.losses[-1] if res.losses else None})


class QualityMeshStage:
    """Density grid -> mesh -> UVs -> texture projected from the views -> ``model.glb``."""

    name = modes.MESH
    needs = ("density", "color_fn", "bbox", "threshold", "quality_views")
    gives = ("mesh_stats",)

    def __init__(self, target_faces: int, texture_size: int, config: QualityConfig, device: str = "cpu") -> None:
        self.target_faces, self.texture_size, self.config, self.device = target_faces, texture_size, config, device

    def run(self, ctx: StageContext) -> None:
        from orbitmesh.mesh import field_to_glb
        from orbitmesh.pipeline.reconstruct import lrm_points_from_output
        from orbitmesh.quality.project import project_texture

        s = ctx.state
        color_fn = s.color_fn  # output-frame points
        projected = {}

        def texture_from_views(uvm) -> np.ndarray:
            res = project_texture(lrm_points_from_output(uvm.vertices).astype(np.float32), uvm.faces, uvm.uvs,
                                  s.quality_views, self.texture_size, config=self.config.project,
                                  fill_fn=lambda p: color_fn(output_points_from_lrm(p).astype(np.float32)),
                                  progress=ctx.progress, device=self.device)
            projected["result"] = res
            return res.texture

        # The shared mesh stage (extract, clean, decimate, normals, UVs, atomic GLB) with the bake
        # replaced by the projection of the orbit views.
        stats = field_to_glb(s.density, color_fn, bbox=s.bbox, threshold=s.threshold,
                             target_faces=self.target_faces, texture_size=self.texture_size,
                             out_path=ctx.job.artefact(GLB_NAME), progress=ctx.progress, close_boundary=True,
                             texture_fn=texture_from_views, name=ctx.job.path.name)
        ctx.job.add_artefact(GLB_NAME)
        res = projected["result"]
        ctx.job.save_image("texture.png", Image.fromarray(res.texture, "RGB"))
        s.warn(*res.warnings, *stats.warnings)
        s.mesh_stats = {**stats.to_dict(), "texels_seen_fraction": round(res.seen_fraction, 4),
                        "views_used": res.views_used, "views_skipped": res.views_skipped}
        s.mesh_stats.pop("out_path", None)
