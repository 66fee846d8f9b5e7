"""One settings object: defaults < config file < environment < CLI flags.

Config file: TOML at ``$ORBITMESH_CONFIG`` or ``<user config dir>/orbitmesh/config.toml``::

    model_dir = "/studio/models/orbitmesh"
    device = "cuda"
    dtype = "auto"
    output_dir = "~/orbitmesh-jobs"
    commercial_only = true      # refuse models whose licence does not allow commercial use
    default_model = "triposr"   # the reconstruction model of a job that names none

Environment: ``ORBITMESH_MODEL_DIR``, ``ORBITMESH_DEVICE``, ``ORBITMESH_DTYPE``,
``ORBITMESH_OUTPUT_DIR``, ``ORBITMESH_COMMERCIAL_ONLY`` (1/true/yes/on or 0/false/no/off),
``ORBITMESH_DEFAULT_MODEL``.

``commercial_only``: every model a job uses (reconstruction, SV3D in quality mode, text-to-image for
a prompt) must have a licence that allows commercial use: one that does not (or that is unknown) is
refused before anything loads, one allowed on a condition (a revenue cap) runs with a warning stating
it (:func:`orbitmesh.models.catalogue.check_commercial_use`). ``default_model``: used when a job names
no model; empty means the first installed of :data:`orbitmesh.models.catalogue.LRM_PREFERENCE`, else the
bundled preview model (:func:`orbitmesh.models.registry.resolve_lrm_source`).
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from orbitmesh.errors import InputError

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float32", "float16", "bfloat16")
ENV_PREFIX = "ORBITMESH_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _flag(name: str, value: Any) -> bool:
    """A yes/no setting from TOML (a bool) or the environment (text)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE + _FALSE:
        return text in _TRUE
    raise InputError(f"{name} must be true or false, got {value!r}", fix=f"set {name} to true or false (or 1 / 0)")


def _user_dir(kind: str) -> Path:
    """The platform's per-user data or config folder for OrbitMesh (no third-party deps)."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA" if kind == "data" else "APPDATA", home / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = home / "Library" / ("Application Support" if kind == "data" else "Preferences")
    else:
        var = "XDG_DATA_HOME" if kind == "data" else "XDG_CONFIG_HOME"
        base = Path(os.environ.get(var) or home / (".local/share" if kind == "data" else ".config"))
    return base / "orbitmesh"


def default_config_path() -> Path:
    return Path(os.environ.get(ENV_PREFIX + "CONFIG") or _user_dir("config") / "config.toml")


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    device: str = "auto"
    dtype: str = "auto"
    output_dir: Path = Path("orbitmesh-output")
    commercial_only: bool = False
    default_model: str | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise InputError(f"unknown device {self.device!r}", fix=f"use one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}", fix=f"use one of {', '.join(DTYPES)}")
        object.__setattr__(self, "model_dir", Path(self.model_dir).expanduser())
        object.__setattr__(self, "output_dir", Path(self.output_dir).expanduser())
        object.__setattr__(self, "commercial_only", _flag("commercial_only", self.commercial_only))
        model = self.default_model
        if model is not None and (not isinstance(model, str) or len(model) > 512):
            raise InputError(f"default_model must be a model name, hub id or path, got {model!r}",
                             fix="e.g. default_model = \"triposr\"")
        object.__setattr__(self, "default_model", (model or "").strip() or None)

    def to_dict(self) -> dict[str, str]:
        """Every setting as text (job.json, doctor); an unset one as ""."""
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}

    def override(self, **values: Any) -> "Settings":
        """A copy with the given non-None values (e.g. CLI flags) applied."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"config file {path} is not valid TOML: {exc}", fix="correct or delete the file") from exc
    known = {f.name for f in fields(Settings)}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"config file {path} has unknown keys {sorted(unknown)}",
                         fix=f"allowed keys are {sorted(known)}")
    return data


def load_settings(config_path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                  **cli: Any) -> Settings:
    """Resolve settings: defaults < config file < environment < ``cli`` keyword values (None = unset)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {"model_dir": _user_dir("data") / "models"}
    values.update(_read_config_file(Path(config_path) if config_path else default_config_path()))
    for f in fields(Settings):
        if env.get(ENV_PREFIX + f.name.upper()):
            values[f.name] = env[ENV_PREFIX + f.name.upper()]
    values.update({k: v for k, v in cli.items() if v is not None})
    return Settings(**values)
