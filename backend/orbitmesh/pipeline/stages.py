"""Stage factories: one per stage name of :mod:`orbitmesh.pipeline.modes`, shared by every mode.

:func:`build_stages` turns a request into its stage list by reading the mode table; a stage
that a mode implements differently (quality's ``mesh`` projects the orbit views) is registered
under ``(mode, stage)``. Stage modules are imported inside the factories: building a fast job
never imports the quality code, and nothing here imports torch at module import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from orbitmesh.pipeline import modes
from orbitmesh.pipeline.orchestrator import Stage
from orbitmesh.pipeline.request import GenerateRequest
from orbitmesh.settings import Settings


@dataclass
class StageEnv:
    """What stage factories may use: the request, the settings, the resolved device/dtype and model source.

    ``quality`` is a :class:`orbitmesh.pipeline.quality.QualityConfig` (None: its defaults);
    ``orbit_pipeline`` a loaded SV3D pipeline to reuse (tests, warm workers).
    """

    request: GenerateRequest
    settings: Settings
    device: str
    compute_dtype: Any
    source: Any  # orbitmesh.models.registry.LRMSource
    quality: Any = None
    orbit_pipeline: Any = None

    def load_lrm(self, notify: Callable[[str], None] | None = None):
        """The request's LRM, kept loaded between jobs (float32 weights; the encoder and transformer run
        under autocast on GPUs, the field stays float32)."""
        import torch

        from orbitmesh.models import registry

        return registry.cached_lrm(self.source, model_dir=self.settings.model_dir, device=self.device,
                                   dtype=torch.float32, notify=notify)

    def quality_config(self):
        from orbitmesh.pipeline.quality import QualityConfig

        return self.quality or QualityConfig()


def _text_to_image(env: StageEnv) -> Stage:
    from orbitmesh.errors import ModelError

    try:
        from orbitmesh.pipeline.text_to_image import stage_for_request
    except ImportError as exc:
        raise ModelError(f"prompt mode is unavailable: {exc}", fix="generate from an image instead") from exc
    return stage_for_request(env.request, env.settings)


def _preprocess(env: StageEnv) -> Stage:
    from orbitmesh.imaging.background import rembg_model_in
    from orbitmesh.pipeline.preprocess import PreprocessConfig, PreprocessStage

    # rembg's model from the model folder when the model manager put it there (preprocessing never downloads)
    return PreprocessStage(PreprocessConfig(rembg_model_path=rembg_model_in(env.settings.model_dir)))


def _orbit(env: StageEnv) -> Stage:
    from orbitmesh.pipeline.orbit import OrbitConfig, OrbitStage

    config = OrbitConfig(seed=env.request.seed, steps=env.request.orbit_steps)
    return OrbitStage(config, pipeline=env.orbit_pipeline, settings=env.settings)


def _lrm(env: StageEnv) -> Stage:
    from orbitmesh.pipeline.reconstruct import LRMStage

    return LRMStage(env.load_lrm, device=env.device, compute_dtype=env.compute_dtype)


def _align(env: StageEnv) -> Stage:
    from orbitmesh.pipeline.quality import AlignStage

    return AlignStage(env.quality_config(), device=env.device)


def _refine(env: StageEnv) -> Stage:
    from orbitmesh.pipeline.quality import RefineStage

    return RefineStage(env.quality_config(), device=env.device)


def _grid_query(env: StageEnv) -> Stage:
    from orbitmesh.pipeline.reconstruct import GridQueryStage

    return GridQueryStage(env.request.mc_resolution)


def _carve(env: StageEnv) -> Stage:
    from orbitmesh.pipeline.input_view import CarveStage

    return CarveStage(env.request.carve)


def _mesh(env: StageEnv) -> Stage:
    from orbitmesh.pipeline.output import MeshStage

    return MeshStage(env.request.target_faces, env.request.texture_size, input_texture=env.request.input_texture,
                     device=env.device)


def _quality_mesh(env: StageEnv) -> Stage:
    from orbitmesh.pipeline.quality import QualityMeshStage

    return QualityMeshStage(env.request.target_faces, env.request.texture_size, env.quality_config(),
                            device=env.device)


def _export(env: StageEnv) -> Stage:
    from orbitmesh.pipeline.output import ExportStage

    return ExportStage(env.request.output)


Factory = Callable[[StageEnv], Stage]
# stage name (or (mode, stage name) for a mode's own version) -> factory
FACTORIES: dict[str | tuple[str, str], Factory] = {
    modes.TEXT_TO_IMAGE: _text_to_image, modes.PREPROCESS: _preprocess, modes.ORBIT: _orbit, modes.LRM: _lrm,
    modes.ALIGN: _align, modes.REFINE: _refine, modes.GRID_QUERY: _grid_query, modes.CARVE: _carve,
    modes.MESH: _mesh,
    ("quality", modes.MESH): _quality_mesh, modes.EXPORT: _export,
}


def build_stages(env: StageEnv) -> list[Stage]:
    """The request's stages, in the order its mode's row of the table gives."""
    mode = env.request.mode
    names = modes.stage_names(mode, prompt=env.request.prompt is not None)
    return [(FACTORIES.get((mode, name)) or FACTORIES[name])(env) for name in names]
