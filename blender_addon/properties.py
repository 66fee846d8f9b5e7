"""Panel settings (per scene, saved with the .blend) and runtime state (window manager, not saved)."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

SOURCES = [
    ("FILE", "Image File", "An image file on disk", "FILE_IMAGE", 0),
    ("DATABLOCK", "Blender Image", "An image already open in Blender", "IMAGE_DATA", 1),
    ("PROMPT", "Prompt", "Describe the object; a text-to-image model draws it first", "FONT_DATA", 2),
]
MODES = [
    ("fast", "Fast", "Image -> LRM -> mesh (seconds on a GPU)"),
    ("quality", "Quality", "Adds SV3D orbit views for a sharper shape and texture (slower, more VRAM)"),
]
TEXTURE_SIZES = [(str(s), f"{s}", f"{s} x {s} texture") for s in (512, 1024, 2048, 4096)]


class OrbitMeshSettings(bpy.types.PropertyGroup):
    source: EnumProperty(name="Source", items=SOURCES, default="FILE")
    image_path: StringProperty(name="Image", subtype="FILE_PATH", description="Input image file")
    image: PointerProperty(name="Image", type=bpy.types.Image, description="An image open in Blender")
    prompt: StringProperty(name="Prompt", description="What to generate, e.g. 'a wooden chair'")
    mode: EnumProperty(name="Mode", items=MODES, default="fast")
    model: StringProperty(name="Model", description="Model name; empty uses the backend's default")
    seed: IntProperty(name="Seed", default=42, min=0, description="Same seed + settings = same result")
    mc_resolution: IntProperty(name="Mesh Resolution", default=256, min=32, max=1024,
                               description="Density grid resolution for marching cubes")
    target_faces: IntProperty(name="Target Faces", default=20000, min=500, max=2_000_000,
                              description="Decimate the mesh to about this many faces")
    texture_size: EnumProperty(name="Texture", items=TEXTURE_SIZES, default="1024")
    size: FloatProperty(name="Size", default=1.0, min=0.001, soft_max=100.0, subtype="DISTANCE", unit="LENGTH",
                        description="Largest dimension of the imported object")
    show_jobs: BoolProperty(name="Show Jobs", default=True)


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
    modes: StringProperty(default="fast,quality")  # comma-separated modes the backend offers
    models: StringProperty()  # comma-separated available model names
    default_model: StringProperty()
    checking: BoolProperty(default=False)
    server_starting: BoolProperty(default=False)


CLASSES = (OrbitMeshSettings, OrbitMeshState)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.orbitmesh = PointerProperty(type=OrbitMeshSettings)
    bpy.types.WindowManager.orbitmesh_state = PointerProperty(type=OrbitMeshState)


def unregister() -> None:
    del bpy.types.WindowManager.orbitmesh_state
    del bpy.types.Scene.orbitmesh
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
