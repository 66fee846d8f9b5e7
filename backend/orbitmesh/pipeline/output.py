"""The shared output stages of every mode: the density field to ``model.glb`` (``mesh``) and the copy of
the GLB to the requested path (``export``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from orbitmesh import atomic
from orbitmesh.pipeline import modes
from orbitmesh.pipeline.orchestrator import StageContext

GLB_NAME = "model.glb"


class MeshStage:
    """Density grid + colour function -> ``model.glb`` in the job folder (via orbitmesh.mesh.field_to_glb).

    ``input_texture``: paint the input photo over the baked colours where the source camera sees the
    surface (:func:`orbitmesh.pipeline.input_view.input_texture_adjust`; needs ``state.preprocess``)."""

    name = modes.MESH
    needs = ("density", "color_fn", "bbox", "threshold")
    gives = ("mesh_stats",)

    def __init__(self, target_faces: int, texture_size: int, *, input_texture: bool = False,
                 device: str = "cpu") -> None:
        self.target_faces, self.texture_size = target_faces, texture_size
        self.input_texture, self.device = input_texture, device

    def run(self, ctx: StageContext) -> None:
        from orbitmesh.mesh import field_to_glb

        # field_to_glb writes atomically itself (and names the mesh after the file's stem).
        state = ctx.state
        adjust, painted = None, {}
        if self.input_texture:
            if state.preprocess is None or state.lrm is None:
                state.warn("input texture skipped: no preprocessed input image")
            else:
                from orbitmesh.pipeline.input_view import input_texture_adjust

                adjust = input_texture_adjust(state, self.texture_size, device=self.device, notes=painted)
        stats = field_to_glb(state.density, state.color_fn, bbox=state.bbox,
                             threshold=state.threshold, target_faces=self.target_faces,
                             texture_size=self.texture_size, out_path=ctx.job.artefact(GLB_NAME),
                             progress=ctx.progress, close_boundary=True, texel_adjust=adjust)
        ctx.job.add_artefact(GLB_NAME)
        mesh = stats.to_dict()
        mesh.pop("out_path", None)
        if self.input_texture:
            mesh["input_texture"] = {"enabled": adjust is not None, **painted}
        state.mesh_stats = mesh
        state.warn(*stats.warnings)


class ExportStage:
    """Copy the job's GLB to ``request.output`` (atomically), when one was asked for."""

    name = modes.EXPORT
    needs = ()
    gives = ()

    def __init__(self, output: str | None) -> None:
        self.output = output

    def run(self, ctx: StageContext) -> None:
        if not self.output:
            return
        ctx.progress(self.name, 0, 1, f"writing {self.output}")
        with atomic.atomic_path(Path(self.output).expanduser()) as tmp:
            shutil.copyfile(ctx.job.artefact(GLB_NAME), tmp)
        ctx.progress(self.name, 1, 1, f"wrote {self.output}")
