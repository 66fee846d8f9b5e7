"""Stage names, their progress weights and the stages each mode runs: the one definition (torch-free).

Stage classes take their ``name`` from :data:`STAGES`; the orchestrator, the job record, the
server's and the CLI's overall ``progress`` (0..1) and the add-on (through the generated
contract) all read this table, so a stage is named and weighed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageInfo:
    """One pipeline stage. ``weight``: its rough share of a job's time, only used for the progress bar."""

    name: str
    weight: float
    description: str


@dataclass(frozen=True)
class ModeInfo:
    """One generation mode: its label and description (CLI help, add-on enum) and its stages in order.

    ``text_to_image`` is prepended when the source is a prompt.
    """

    name: str
    label: str
    description: str
    stages: tuple[str, ...]


TEXT_TO_IMAGE = "text_to_image"
PREPROCESS = "preprocess"
ORBIT = "orbit"
LRM = "lrm"
ALIGN = "align"
REFINE = "refine"
GRID_QUERY = "grid_query"
CARVE = "carve"
MESH = "mesh"
EXPORT = "export"

# Weights: a guess from CPU/GPU runs of the default settings.
STAGES: dict[str, StageInfo] = {s.name: s for s in (
    StageInfo(TEXT_TO_IMAGE, 4.0, "prompt -> image (diffusers text-to-image)"),
    StageInfo(PREPROCESS, 1.0, "background removal and recentring"),
    StageInfo(ORBIT, 12.0, "SV3D: 21 orbit views of the object"),
    StageInfo(LRM, 2.0, "image -> triplane (reconstruction model)"),
    StageInfo(ALIGN, 2.0, "orbit cameras fitted to the reconstruction's silhouettes"),
    StageInfo(REFINE, 4.0, "triplane optimised against the orbit views"),
    StageInfo(GRID_QUERY, 3.0, "triplane -> density grid and colour field"),
    StageInfo(CARVE, 0.3, "density grid cut to the input's silhouette, thin parts the model lost filled"),
    StageInfo(MESH, 4.0, "marching cubes, decimation, UVs, texture, GLB"),
    StageInfo(EXPORT, 0.2, "copy of the GLB to the requested output path"),
)}

MODES: dict[str, ModeInfo] = {m.name: m for m in (
    ModeInfo("fast", "Fast", "Image -> LRM -> mesh (seconds on a GPU)",
             (PREPROCESS, LRM, GRID_QUERY, CARVE, MESH, EXPORT)),
    ModeInfo("quality", "Quality", "Adds SV3D orbit views for a sharper shape and texture (slower, more VRAM)",
             (PREPROCESS, ORBIT, LRM, ALIGN, REFINE, GRID_QUERY, CARVE, MESH, EXPORT)),
)}
DEFAULT_MODE = "fast"


def stage_names(mode: str, *, prompt: bool = False) -> list[str]:
    """The stages a job of ``mode`` runs, in order (with ``text_to_image`` first for a prompt)."""
    return ([TEXT_TO_IMAGE] if prompt else []) + list(MODES[mode].stages)


def stage_weights(stages: list[str]) -> list[float]:
    """The progress weight of each stage (an unknown stage weighs 1)."""
    return [STAGES[s].weight if s in STAGES else 1.0 for s in stages]


def overall_progress(stages: list[str], stage: str, step: int, total: int) -> float:
    """0..1 over ``stages`` weighted by :data:`STAGES` (:func:`orbitmesh.progress.weighted_progress`)."""
    from orbitmesh.progress import weighted_progress

    return weighted_progress(stages, stage_weights(stages), stage, step, total)
