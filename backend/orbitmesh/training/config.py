"""Training configuration: one TOML file -> typed dataclasses (unknown keys are errors).

Layout (see ``configs/preview.toml`` for a full example)::

    [model]                 # architecture: a preset and/or [model.config] overrides,
    preset = "tiny"         # or `init` = a checkpoint to fine-tune (name, folder, file)
    [model.config]          # LRMConfig fields (nested [model.config.encoder])
    [data]                  # kind = "procedural" (seed, count, ...) or "folder" (folder = PATH)
    [train]                 # batch, optimiser, precision, rays/points per sample, time budget
    [[stages]]              # multi-stage schedule: steps, render_size, samples_per_ray
    [loss]                  # weights: rgb, mask, occupancy, surface_rgb, perceptual
    [output]                # run dir, checkpoint/validation cadence, export folder

Relative paths are relative to the working directory the command runs in.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from orbitmesh.errors import InputError


@dataclass
class ModelSection:
    preset: str | None = None
    init: str | None = None  # a checkpoint to fine-tune: model name, folder or weights file
    config: dict = field(default_factory=dict)  # LRMConfig overrides


@dataclass
class DataSection:
    kind: str = "procedural"  # or "folder"
    seed: int = 0
    count: int = 1000
    views: int = 8
    view_size: int = 64
    input_size: int | None = None  # default: the model's input_size
    input_jitter_deg: float = 2.0
    points: int = 4096  # 3D supervision points stored per object (procedural only)
    # Procedural only: render this many new objects per step (seeds after the initial `count`)
    # and add them to the pool, up to `max_objects`; the initial pool comes from the cache.
    grow_per_step: int = 0
    max_objects: int | None = None
    cache_dir: str | None = None
    workers: int = 1
    folder: str | None = None
    validation_seed: int = 999_000  # procedural validation objects: below the held-out range
    validation_count: int = 4


@dataclass
class TrainSection:
    batch_size: int = 8
    lr: float = 4e-4
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere; or "fp32" / "bf16"
    threads: int | None = None  # torch CPU threads
    rays_per_sample: int = 256
    views_per_sample: int = 4
    points_per_sample: int = 2048
    fg_fraction: float = 0.5
    time_budget_minutes: float | None = None  # schedule by max(step, time) progress; stop when spent
    # Fresh models only: "sincos" starts the encoder's patch position embeddings as a unit-scale 2D
    # sin-cos code (transformers' default is noise of std 0.02, which tells the triplane tokens
    # almost nothing about where in the image a patch lies until it has been learned).
    init_pos_embed: str = "default"


@dataclass
class Stage:
    steps: int
    render_size: int = 64
    samples_per_ray: int = 64  # half stratified, half importance
    # Per-stage overrides of [train]. rays_per_sample = 0 trains on the 3D losses alone (occupancy,
    # surface colour: no volume rendering, ~20x cheaper per object), so an early stage can see many
    # more objects per minute; a later rendering stage then tunes opacity and colour for novel views.
    rays_per_sample: int | None = None
    batch_size: int | None = None


@dataclass
class LossSection:
    rgb: float = 1.0
    mask: float = 0.5
    occupancy: float = 0.0  # procedural data only (needs ground-truth occupancy)
    surface_rgb: float = 0.0  # procedural data only
    occupancy_density: float = 10.0  # density at occupancy 0.5 (the mesh threshold it implies)
    perceptual: float = 0.0
    perceptual_model: str | None = None  # local folder of a transformers vision model; skipped if absent


@dataclass
class OutputSection:
    dir: str = "orbitmesh-output/train"
    log_every: int = 10
    checkpoint_every: int = 200
    validate_every: int = 200
    export: str | None = None  # save the EMA model here (config.json + model.safetensors) at the end
    calibrate_threshold: bool = True  # pick the mesh threshold that maximises IoU on training objects


@dataclass
class TrainConfig:
    model: ModelSection
    data: DataSection
    train: TrainSection
    stages: list[Stage]
    loss: LossSection
    output: OutputSection
    source: dict = field(default_factory=dict)  # the parsed TOML, stored in checkpoints

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


def _section(cls, data: Any, name: str):
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise InputError(f"[{name}] must be a table", fix=f"write it as [{name}] with key = value lines")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"unknown keys in [{name}]: {sorted(unknown)}", fix=f"allowed keys are {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise InputError(f"[{name}]: {exc}", fix="check the section against configs/preview.toml") from exc


def parse_config(data: Mapping[str, Any], base_dir: Path | None = None) -> TrainConfig:
    """Validate a parsed TOML mapping; relative paths are resolved against ``base_dir``."""
    known = {"model", "data", "train", "stages", "loss", "output"}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"unknown sections {sorted(unknown)} in the training config", fix=f"use {sorted(known)}")
    stages_raw = data.get("stages") or []
    if not isinstance(stages_raw, list) or not stages_raw:
        raise InputError("the training config has no [[stages]]", fix="add at least one [[stages]] with steps = N")
    cfg = TrainConfig(
        model=_section(ModelSection, data.get("model"), "model"),
        data=_section(DataSection, data.get("data"), "data"),
        train=_section(TrainSection, data.get("train"), "train"),
        stages=[_section(Stage, s, f"stages.{i}") for i, s in enumerate(stages_raw)],
        loss=_section(LossSection, data.get("loss"), "loss"),
        output=_section(OutputSection, data.get("output"), "output"),
        source=dict(data),
    )
    _check(cfg)
    if base_dir is not None:
        for section, key in ((cfg.data, "cache_dir"), (cfg.data, "folder"), (cfg.output, "dir"),
                             (cfg.output, "export"), (cfg.loss, "perceptual_model")):
            value = getattr(section, key)
            if value:
                p = Path(value).expanduser()
                setattr(section, key, str(p if p.is_absolute() else base_dir / p))
        if cfg.model.init and (base_dir / cfg.model.init).exists():
            cfg.model.init = str(base_dir / cfg.model.init)
    return cfg


def _positive(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"{name} must be a positive number, got {value!r}", fix=f"set {name} > 0")


def _check(cfg: TrainConfig) -> None:
    if cfg.data.kind not in ("procedural", "folder"):
        raise InputError(f"unknown data kind {cfg.data.kind!r}", fix='use kind = "procedural" or "folder"')
    if cfg.data.kind == "folder" and not cfg.data.folder:
        raise InputError('data kind "folder" needs folder = PATH',
                         fix="point it at a folder of renders with cameras.json")
    if not cfg.model.preset and not cfg.model.init and not cfg.model.config:
        raise InputError("[model] names no architecture",
                         fix='set preset = "tiny", a [model.config] table, or init = CHECKPOINT')
    for name, value in (("train.batch_size", cfg.train.batch_size), ("train.lr", cfg.train.lr),
                        ("train.rays_per_sample", cfg.train.rays_per_sample),
                        ("train.views_per_sample", cfg.train.views_per_sample), ("data.count", cfg.data.count),
                        ("data.views", cfg.data.views), ("data.view_size", cfg.data.view_size)):
        _positive(value, name)
    for i, st in enumerate(cfg.stages):
        _positive(st.steps, f"stages.{i}.steps")
        _positive(st.render_size, f"stages.{i}.render_size")
        if st.batch_size is not None:
            _positive(st.batch_size, f"stages.{i}.batch_size")
        if st.rays_per_sample is not None and st.rays_per_sample < 0:
            raise InputError(f"stages.{i}.rays_per_sample must be >= 0", fix="0 trains on the 3D losses alone")
        if st.samples_per_ray < 4 or st.samples_per_ray % 2:
            raise InputError(f"stages.{i}.samples_per_ray must be an even number >= 4", fix="e.g. 64")
    if cfg.train.init_pos_embed not in ("default", "sincos"):
        raise InputError(f"unknown init_pos_embed {cfg.train.init_pos_embed!r}", fix='use "default" or "sincos"')
    if cfg.train.precision not in ("auto", "fp32", "bf16"):
        raise InputError(f"unknown precision {cfg.train.precision!r}", fix='use "auto", "fp32" or "bf16"')
    if cfg.data.kind == "procedural":
        top = cfg.data.seed + max(cfg.data.count, cfg.data.max_objects or 0)
        if cfg.data.grow_per_step < 0 or top > 1_000_000:
            raise InputError("procedural training seeds must stay below 1000000 (held out for benchmarks)",
                             fix="lower data.seed, data.count or data.max_objects")
    if cfg.train.time_budget_minutes is not None:
        _positive(cfg.train.time_budget_minutes, "train.time_budget_minutes")


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a training TOML file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training config not found: {path}", fix="pass a TOML file, e.g. configs/preview.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid TOML: {exc}", fix="fix the syntax") from exc
    return parse_config(data)  # relative paths stay relative to the working directory
