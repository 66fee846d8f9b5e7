"""What the stages of one job hand each other: a typed record instead of a dict of string keys.

Each stage declares the fields it ``needs`` and ``gives`` (class attributes); the orchestrator
checks, before anything runs, that every need is given by the initial state or an earlier stage,
so a mis-ordered mode table fails at once with the field named.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable


@dataclass
class PipelineState:
    """The job's working state. Array shapes are noted per field; ``None`` means "not produced yet"."""

    # The request (the text-to-image stage replaces image_path with the image it drew).
    image_path: str | None = None
    prompt: str | None = None
    seed: int = 42
    # text_to_image
    effective_prompt: str | None = None
    text_to_image: dict[str, Any] | None = None  # what the stage recorded in job.json
    # preprocess: PIL RGB composite on white at the encoder size, its (S, S) bool mask, the RGBA cut-out
    # and the full PreprocessResult (the orbit stage uses its higher-resolution cut-out).
    image: Any = None
    mask: Any = None
    rgba: Any = None
    preprocess: Any = None
    # orbit (quality): an OrbitResult (frames + cameras)
    orbit: Any = None
    # lrm: the loaded model and its triplane, (1, 3, C, H, W) float32
    lrm: Any = None
    planes: Any = None
    # align (quality): the posed views and the AlignResult
    quality_views: list | None = None
    alignment: Any = None
    # grid_query: (R, R, R) float32 density in the output frame, the colour function
    # ((N, 3) float32 points -> (N, 3) float32 RGB in [0, 1]), its box and the surface threshold
    density: Any = None
    color_fn: Callable | None = None
    bbox: tuple | None = None
    threshold: float | None = None
    grid_stats: dict[str, Any] = field(default_factory=dict)
    # mesh
    mesh_stats: dict[str, Any] = field(default_factory=dict)
    # every stage: messages for the user, in order, without repeats
    warnings: list[str] = field(default_factory=list)

    def warn(self, *messages: str) -> None:
        """Append warnings, dropping ones already given."""
        for message in messages:
            if message not in self.warnings:
                self.warnings.append(message)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def given(self) -> set[str]:
        """Fields holding a value (not None, not empty) at this point."""
        return {f.name for f in fields(self) if getattr(self, f.name) not in (None, {}, [])}
