"""The typed request and result of one generation job: the contract every front end derives from.

:class:`GenerateRequest` is the single definition of every generate setting: each field that a
client may set carries a :class:`Setting` (type, default, range or choices, label, help). The CLI
options (:func:`orbitmesh.cli.common.add_request_args`), the server's accepted JSON settings and
their validation, and the Blender add-on's properties, settings dict and command-line flags
(through the generated ``blender_addon/contract.py``, ``python build.py --write-contract``) are all
built from :func:`settings_spec`. Adding a setting is one field here plus regenerating the add-on
contract. This module is torch-free.
"""

from __future__ import annotations

import math
import os
import stat
import warnings as _warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from orbitmesh.errors import InputError
from orbitmesh.pipeline.modes import DEFAULT_MODE
from orbitmesh.pipeline.modes import MODES as MODE_TABLE

MODES = tuple(MODE_TABLE)
TEXTURE_SIZES = (512, 1024, 2048, 4096)
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Setting:
    """How one generate setting is typed, bounded and explained (the metadata of its request field).

    ``type`` is ``"int"``, ``"str"``, ``"choice"`` or ``"bool"`` (a switch: its one command-line flag turns it
    away from its default, ``--no-x`` for one that is on by default, see :func:`cli_flag`); ``optional``
    settings accept None (meaning the backend's default). ``presets`` are the values a UI offers in a
    dropdown (any value in the range is still valid). ``choices`` are (value, label, description) triples.
    """

    type: str
    label: str
    help: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[tuple[str, str, str], ...] = ()
    presets: tuple[int, ...] = ()
    optional: bool = False
    max_length: int | None = None
    panel: bool = True  # shown in the add-on's panel (else only an operator argument)

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(value for value, _, _ in self.choices)


def _setting(default: Any, **spec: Any) -> Any:
    return field(default=default, metadata={"setting": Setting(**spec)})


@dataclass
class GenerateRequest:
    """What to generate. Exactly one of ``image_path`` / ``prompt`` is the source.

    ``output`` is an optional extra copy of the GLB outside the job folder. Every other field is a
    setting (see :func:`settings_spec`).
    """

    image_path: str | None = None
    prompt: str | None = None
    mode: str = _setting(DEFAULT_MODE, type="choice", label="Mode", help="fast: image -> LRM -> mesh; quality: "
                         "adds SV3D orbit views (slower, more VRAM)",
                         choices=tuple((m.name, m.label, m.description) for m in MODE_TABLE.values()))
    model: str | None = _setting(None, type="str", label="Model", optional=True, max_length=512,
                                 help="reconstruction model: a name (orbitmesh-preview, triposr, vfusion3d, "
                                      "tiny-random), a hub id, a folder or a weights file; empty: the best model "
                                      "available")
    text_to_image_model: str | None = _setting(None, type="str", label="Text-to-Image Model", optional=True,
                                               max_length=512, panel=False,
                                               help="text-to-image model for a prompt (hub id or folder); "
                                                    "empty: the default")
    seed: int = _setting(42, type="int", label="Seed", minimum=0, maximum=SEED_MAX,
                         help="same seed + settings = same result")
    mc_resolution: int = _setting(256, type="int", label="Mesh Resolution", minimum=32, maximum=1024,
                                  help="density grid resolution for marching cubes")
    target_faces: int = _setting(20000, type="int", label="Target Faces", minimum=500, maximum=2_000_000,
                                 help="decimate the mesh to about this many faces")
    texture_size: int = _setting(1024, type="int", label="Texture Size", minimum=64, maximum=8192,
                                 presets=TEXTURE_SIZES, help="texture width and height in pixels")
    orbit_steps: int = _setting(50, type="int", label="Orbit Steps", minimum=1, maximum=500, panel=False,
                                help="quality mode: SV3D sampling steps for the orbit views (fewer: faster, rougher)")
    input_texture: bool = _setting(True, type="bool", label="Input Texture",
                                   help="fast mode: paint the input photo, at its full resolution, onto the surface "
                                        "it shows (off: the model's colours only)")
    carve: bool = _setting(True, type="bool", label="Carve to Silhouette",
                           help="cut the shape to the input's outline and fill thin parts the model lost, before "
                                "meshing (skipped with a warning when the outline and the model disagree grossly)")
    output: str | None = None

    # ----- validation ------------------------------------------------------------------------

    def validate(self) -> "GenerateRequest":
        """Settings valid and a source given (see the two halves); returns self for chaining."""
        return self.validate_settings().validate_source()

    def validate_source(self) -> "GenerateRequest":
        """Exactly one source: a regular image file (:func:`check_image_file`) or a non-empty prompt. Raises
        InputError."""
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
        if has_image:
            check_image_file(self.image_path)
        return self

    def validate_settings(self) -> "GenerateRequest":
        """Every setting has its type and lies in its range/choices. Raises InputError naming the field."""
        for name, spec in settings_spec().items():
            check_setting(name, spec, getattr(self, name))
        return self

    # ----- (de)serialisation -----------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerateRequest":
        """Build from JSON-like data (API callers); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown settings {sorted(unknown)}", fix=f"allowed settings are {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "GenerateRequest":
        """Client settings only (no source, no output path): unknown keys are an error, the rest validated."""
        allowed = tuple(settings_spec())
        unknown = sorted(set(settings) - set(allowed))
        if unknown:
            raise InputError(f"unknown settings {unknown}", fix=f"allowed settings are {list(allowed)}")
        return cls(**settings).validate_settings()

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> tuple["GenerateRequest", list[str]]:
        """Lenient reading of a request saved by this or an earlier version (job.json, the add-on's job list):
        unknown keys are dropped with a warning, missing keys take their defaults. Returns (request, warnings)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        notes = [f"ignored unknown saved settings {unknown} (written by another version)"] if unknown else []
        for note in notes:
            _warnings.warn(note, stacklevel=2)
        return cls(**{k: v for k, v in data.items() if k in known}), notes

    def settings(self) -> dict[str, Any]:
        """The client settings of this request ({name: value}, source and output left out)."""
        return {name: getattr(self, name) for name in settings_spec()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_image_file(path: Any) -> None:
    """Raise InputError unless ``path`` names a readable regular file (symlinks followed).

    Missing, a folder, a FIFO, a device or a socket each get their own message. Only ``os.stat`` and
    ``os.access`` are used: opening a FIFO would block until a writer came.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"image_path must be a file path, got {type(path).__name__}", fix="pass the image's path")
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        broken = os.path.lexists(path)  # a symlink whose target is gone
        raise InputError(f"image not found: {path}" + (" (a broken symbolic link)" if broken else ""),
                         fix="check the path") from None
    except OSError as exc:  # permission denied on a parent folder, a name too long, ...
        raise InputError(f"cannot read the image {path}: {exc.strerror or exc}",
                         fix="check the path and its folders' permissions") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise InputError(f"not a regular file: {path} is {kind}",
                         fix="give the path of an image file (PNG, JPEG, WebP, ...)")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read the image {path}: permission denied",
                         fix="make the file readable (chmod +r) or copy it somewhere readable")


def settings_spec() -> dict[str, Setting]:
    """{name: Setting} for every client setting of :class:`GenerateRequest`, in field order."""
    return {f.name: f.metadata["setting"] for f in fields(GenerateRequest) if "setting" in f.metadata}


def default_settings() -> dict[str, Any]:
    """{name: default} for every client setting."""
    return {f.name: f.default for f in fields(GenerateRequest) if "setting" in f.metadata}


def cli_flag(name: str) -> str:
    """The command-line option of a setting: ``mc_resolution`` -> ``--mc-resolution``. A bool setting has one
    flag, the one that turns it away from its default: ``--no-input-texture`` for ``input_texture`` (on by
    default), ``--x`` for a switch that is off by default; it takes no value."""
    flag = name.replace("_", "-")
    spec = settings_spec().get(name)
    if spec is not None and spec.type == "bool" and default_settings()[name]:
        return "--no-" + flag
    return "--" + flag


def addon_contract() -> dict[str, Any]:
    """What the Blender add-on (which cannot import the backend) needs of this contract, as plain data:
    written into ``blender_addon/contract.py`` by ``python build.py --write-contract``."""
    from orbitmesh.jobs import TERMINAL

    rows = []
    for name, spec in settings_spec().items():
        row = {"name": name, "default": default_settings()[name], "flag": cli_flag(name), **asdict(spec)}
        row["choices"] = [list(c) for c in spec.choices]
        row["presets"] = list(spec.presets)
        rows.append(row)
    return {"settings": rows, "terminal": list(TERMINAL)}


def check_setting(name: str, spec: Setting, value: Any) -> None:
    """Raise InputError (naming ``name``, the allowed values and the fix) unless ``value`` fits ``spec``."""
    if value is None and spec.optional:
        return
    if spec.type == "choice":
        if value not in spec.values:
            raise InputError(f"unknown {name} {value!r}", fix=f"use one of {', '.join(spec.values)}")
    elif spec.type == "str":
        if not isinstance(value, str) or not value.strip() or (spec.max_length and len(value) > spec.max_length):
            limit = f" of at most {spec.max_length} characters" if spec.max_length else ""
            raise InputError(f"{name} must be non-empty text{limit}, got {value!r}",
                             fix=f"omit {name} for the default" if spec.optional else f"set {name}")
    elif spec.type == "bool":
        if not isinstance(value, bool):  # JSON true/false only: 0, 1, "yes" are refused, not guessed
            raise InputError(f"{name} must be true or false, got {value!r}", fix=f"set {name} to true or false")
    elif spec.type == "int":
        lo, hi = spec.minimum, spec.maximum
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            raise InputError(f"{name} is {value}", fix=f"use a whole number between {lo} and {hi}")
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise InputError(f"{name} must be a whole number between {lo} and {hi}, got {value!r}",
                             fix=f"set {name} inside that range")
    else:  # a new Setting.type must be handled here and by every derived front end
        raise TypeError(f"unhandled setting type {spec.type!r} for {name}")


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
    # {kind: {name, licence, commercial, condition}} of each model used (orbitmesh.pipeline.licences)
    licences: dict[str, dict[str, Any]] = field(default_factory=dict)
    worker: str | None = None  # which worker ran it ("local:<host>:<pid>", "ray:<node>:<pid>"); None in-process

    def to_dict(self) -> dict[str, Any]:
        return {"job_dir": str(self.job_dir), "glb_path": str(self.glb_path), "request": self.request.to_dict(),
                "model": self.model, "timings": self.timings, "stats": self.stats, "warnings": self.warnings,
                "licences": self.licences, "worker": self.worker}
