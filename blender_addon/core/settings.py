"""The generate settings as the add-on uses them, all derived from the generated ``contract.py``.

``contract.SETTINGS`` (written by ``python build.py --write-contract`` from the backend's
``GenerateRequest``) is the only place a setting's name, type, default, range, choices, label,
help and command-line flag are written; the panel properties, the operator arguments, the settings
dict sent to a backend, the subprocess flags and the regenerate arguments are all built here or
from :data:`SETTINGS`. A settings dict is ``{name: value}``; an optional setting's "backend default"
is ``""`` on the add-on side (Blender string properties cannot hold None).
"""

from __future__ import annotations

from typing import Any

from .. import contract
from .errors import AddonError

Setting = dict[str, Any]  # one row of contract.SETTINGS (name, default, flag, type, label, help, ...)

SETTINGS: tuple[Setting, ...] = tuple(contract.SETTINGS)
BY_NAME: dict[str, Setting] = {s["name"]: s for s in SETTINGS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
PANEL: tuple[Setting, ...] = tuple(s for s in SETTINGS if s["panel"])  # shown in the sidebar panel


def default(setting: Setting) -> Any:
    """The add-on's default of ``setting``: the contract's, with ``""`` for an optional one's None."""
    return "" if setting["default"] is None else setting["default"]


def defaults() -> dict[str, Any]:
    """{name: default} for every setting, in contract order."""
    return {s["name"]: default(s) for s in SETTINGS}


def choice_values(name: str) -> list[str]:
    """The allowed values of a ``choice`` setting, e.g. ``choice_values("mode") == ["fast", "quality"]``."""
    return [value for value, _label, _description in BY_NAME[name]["choices"]]


def problem(setting: Setting, value: Any) -> str | None:
    """Why ``value`` does not fit ``setting`` (None when it does): the add-on side of the backend's check,
    so a bad value is named before a job starts (and an old job list's stale values are caught)."""
    if setting["optional"] and value in (None, ""):
        return None
    kind = setting["type"]
    if kind == "choice":
        values = [c[0] for c in setting["choices"]]
        return None if value in values else f"must be one of {', '.join(values)}, got {value!r}"
    if kind == "str":
        limit = setting["max_length"]
        if isinstance(value, str) and value.strip() and (not limit or len(value) <= limit):
            return None
        shown = value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value
        return "must be non-empty text" + (f" of at most {limit} characters" if limit else "") + f", got {shown!r}"
    if kind == "int":
        lo, hi = setting["minimum"], setting["maximum"]
        if isinstance(value, int) and not isinstance(value, bool) and (lo is None or value >= lo) \
                and (hi is None or value <= hi):
            return None
        return f"must be a whole number between {lo} and {hi}, got {value!r}"
    if kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    raise TypeError(f"unhandled setting type {kind!r} for {setting['name']} (update the add-on with the contract)")


def check(values: dict[str, Any]) -> None:
    """Raise :class:`AddonError` naming the first setting in ``values`` whose value does not fit the contract."""
    for name, value in values.items():
        if name not in BY_NAME:
            raise AddonError(f"unknown setting {name!r}", fix=f"use one of {', '.join(NAMES)}")
        why = problem(BY_NAME[name], value)
        if why:
            raise AddonError(f"{BY_NAME[name]['label']} ({name}) {why}", fix=f"change {name} in the panel or call")


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """The settings a backend gets: known names only, None/"" (= the backend's default) left out."""
    return {k: v for k, v in values.items() if k in BY_NAME and v is not None and v != ""}


def cli_args(values: dict[str, Any]) -> list[str]:
    """``orbitmesh generate`` options for ``values``: ``[flag, str(value), ...]`` in contract order; a bool
    setting is its flag alone when the value differs from the default (``--no-carve`` for carve=False)."""
    kept = clean(values)
    args: list[str] = []
    for s in SETTINGS:
        if s["name"] not in kept:
            continue
        if s["type"] == "bool":
            args += [s["flag"]] if bool(kept[s["name"]]) != bool(s["default"]) else []
        else:
            args += [s["flag"], str(kept[s["name"]])]
    return args


def from_saved(saved: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Settings saved by this or an earlier add-on version (the job list), made current.

    Unknown keys are dropped and a missing key takes its default; a value that no longer fits the
    contract takes its default too. Returns (settings in contract order, notes saying what changed).
    """
    notes = []
    unknown = sorted(set(saved) - set(BY_NAME))
    if unknown:
        notes.append(f"ignored unknown settings {unknown} (written by another version)")
    out = defaults()
    for name, s in BY_NAME.items():
        if name not in saved:
            continue
        value = saved[name]
        if value is None and s["optional"]:
            value = ""
        why = problem(s, value)
        if why:
            notes.append(f"{name} {why}; using the default {out[name]!r}")
            continue
        out[name] = value
    return out, notes
