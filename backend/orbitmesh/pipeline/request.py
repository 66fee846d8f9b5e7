"""The typed request and result of one generation job (CLI, Python API, server and add-on share them)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from orbitmesh.errors import InputError

MODES = ("fast", "quality")
TEXTURE_SIZES = (512, 1024, 2048, 4096)


@dataclass
class GenerateRequest:
    """What to generate. Exactly one of ``image_path`` / ``prompt`` is the source.

    ``model`` None means the backend's default (the best model available); the same for
    ``text_to_image_model`` (used only with a prompt).
    ``output`` is an optional extra copy of the GLB outside the job folder.
    """

    image_path: str | None = None
    prompt: str | None = None
    mode: str = "fast"
    model: str | None = None
    text_to_image_model: str | None = None
    seed: int = 42
    mc_resolution: int = 256
    target_faces: int = 20000
    texture_size: int = 1024
    output: str | None = None

    def validate(self) -> "GenerateRequest":
        """Raise InputError naming the bad field and the fix; returns self for chaining."""
        has_image = bool(self.image_path)
        has_prompt = self.prompt is not None
        if has_image == has_prompt:
            raise InputError("give exactly one source: an image path or a prompt",
                             fix="pass image_path=... or prompt=..., not both or neither")
        if has_prompt:
            if not isinstance(self.prompt, str):
                raise InputError(f"prompt must be text, got {type(self.prompt).__name__}", fix="pass a string")
            if not self.prompt.strip():
                raise InputError("the prompt is empty", fix="describe the object, e.g. 'a wooden chair'")
        if has_image and not Path(self.image_path).is_file():
            raise InputError(f"image not found: {self.image_path}", fix="check the path")
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r}", fix=f"use one of {', '.join(MODES)}")
        for name, lo, hi in (("seed", 0, 2**32 - 1), ("mc_resolution", 32, 1024),
                             ("target_faces", 500, 2_000_000), ("texture_size", 64, 8192)):
            value = getattr(self, name)
            if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
                raise InputError(f"{name} is {value}", fix=f"use a whole number between {lo} and {hi}")
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise InputError(f"{name} must be a whole number between {lo} and {hi}, got {value!r}",
                                 fix=f"set {name} inside that range")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerateRequest":
        """Build from JSON-like data (server, add-on); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown settings {sorted(unknown)}", fix=f"allowed settings are {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerateResult:
    """What a finished job produced. ``timings`` maps 'NN-stage' to seconds."""

    job_dir: Path
    glb_path: Path
    request: GenerateRequest
    model: str
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"job_dir": str(self.job_dir), "glb_path": str(self.glb_path), "request": self.request.to_dict(),
                "model": self.model, "timings": self.timings, "stats": self.stats, "warnings": self.warnings}
