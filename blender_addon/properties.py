"""Panel settings (per scene, saved with the .blend) and runtime state (window manager, not saved).

Every generate setting's property is built from the contract (:func:`setting_property`), for the
panel here and for the generate operator's arguments (``ops_generate``); only the source, the
object size and the panel's own switches are written by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .core import settings as contract_settings

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # bpy IntProperty bounds: a wider contract bound is left out
SOURCES = [
    ("FILE", "Image File", "An image file on disk", "FILE_IMAGE", 0),
    ("DATABLOCK", "Blender Image", "An image already open in Blender", "IMAGE_DATA", 1),
    ("PROMPT", "Prompt", "Describe the object; a text-to-image model draws it first", "FONT_DATA", 2),
]


def is_preset_enum(setting: dict[str, Any], *, operator: bool) -> bool:
    """The panel offers an int setting with presets as a dropdown (an EnumProperty of the presets as
    text); the operator takes any whole number in range."""
    return setting["type"] == "int" and bool(setting["presets"]) and not operator


def setting_property(setting: dict[str, Any], *, operator: bool):
    """The bpy property of one contract setting: a panel property, or (``operator``) a SKIP_SAVE operator
    argument, so that "was it passed?" (``is_property_set``) means this call only."""
    kind = setting["type"]
    common: dict[str, Any] = {"name": setting["label"], "description": setting["help"]}
    if operator:
        common["options"] = {"SKIP_SAVE"}
    if kind == "choice":
        return EnumProperty(items=[tuple(c) for c in setting["choices"]], default=setting["default"], **common)
    if kind == "str":
        return StringProperty(default=contract_settings.default(setting), **common)
    if kind == "int" and is_preset_enum(setting, operator=operator):
        values = sorted({*setting["presets"], setting["default"]})
        return EnumProperty(items=[(str(v), str(v), f"{setting['label']} {v}") for v in values],
                            default=str(setting["default"]), **common)
    if kind == "int":
        bounds = {}
        if setting["minimum"] is not None and setting["minimum"] >= INT32_MIN:
            bounds["min"] = setting["minimum"]
        if setting["maximum"] is not None and setting["maximum"] <= INT32_MAX:
            bounds["max"] = setting["maximum"]
        return IntProperty(default=setting["default"], **bounds, **common)
    if kind == "bool":  # a checkbox
        return BoolProperty(default=bool(setting["default"]), **common)
    raise TypeError(f"unhandled setting type {kind!r} for {setting['name']} (update properties.setting_property)")


def panel_value(panel, setting: dict[str, Any]) -> Any:
    """A setting's value in the panel, in settings-dict terms (a preset dropdown's text back to int)."""
    value = getattr(panel, setting["name"])
    if is_preset_enum(setting, operator=False):
        return int(value)
    return value.strip() if isinstance(value, str) else value


def with_settings(annotations: dict[str, Any], after: str, settings: Iterable[dict[str, Any]], *,
                  operator: bool) -> dict[str, Any]:
    """``annotations`` with a property per setting inserted after the key ``after`` (keeps the UI order)."""
    out: dict[str, Any] = {}
    for key, value in annotations.items():
        out[key] = value
        if key == after:
            out.update({s["name"]: setting_property(s, operator=operator) for s in settings})
    return out


class OrbitMeshSettings(bpy.types.PropertyGroup):
    source: EnumProperty(name="Source", items=SOURCES, default="FILE")
    image_path: StringProperty(name="Image", subtype="FILE_PATH", description="Input image file")
    image: PointerProperty(name="Image", type=bpy.types.Image, description="An image open in Blender")
    prompt: StringProperty(name="Prompt", description="What to generate, e.g. 'a wooden chair'")
    # + one property per panel setting of the contract (see below)
    size: FloatProperty(name="Size", default=1.0, min=0.001, soft_max=100.0, subtype="DISTANCE", unit="LENGTH",
                        description="Largest dimension of the imported object")
    show_jobs: BoolProperty(name="Show Jobs", default=True)


OrbitMeshSettings.__annotations__ = with_settings(OrbitMeshSettings.__annotations__, "prompt",
                                                  contract_settings.PANEL, operator=False)


class OrbitMeshState(bpy.types.PropertyGroup):
    """What the panel shows while jobs run; written on the main thread only."""

    running: BoolProperty(default=False)
    job_id: StringProperty()
    status: StringProperty()
    stage: StringProperty()
    message: StringProperty()
    progress: FloatProperty(default=0.0, min=0.0, max=1.0)
    eta_s: FloatProperty(default=-1.0)
    error: StringProperty()
    error_fix: StringProperty()
    # Backend status (the doctor-style line) from the last health check.
    status_line: StringProperty(default="not checked yet")
    status_ok: BoolProperty(default=False)
    # comma-separated modes the backend offers (all of them until a check says otherwise)
    modes: StringProperty(default=",".join(contract_settings.choice_values("mode")))
    models: StringProperty()  # comma-separated available model names
    default_model: StringProperty()
    checking: BoolProperty(default=False)
    server_starting: BoolProperty(default=False)


CLASSES = (OrbitMeshSettings, OrbitMeshState)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)


def register() -> None:
    _register_classes()
    bpy.types.Scene.orbitmesh = PointerProperty(type=OrbitMeshSettings)
    bpy.types.WindowManager.orbitmesh_state = PointerProperty(type=OrbitMeshState)


def unregister() -> None:
    del bpy.types.WindowManager.orbitmesh_state
    del bpy.types.Scene.orbitmesh
    _unregister_classes()
