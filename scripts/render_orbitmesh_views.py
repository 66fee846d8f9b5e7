"""Render the visible meshes of a .blend into an OrbitMesh training folder (docs/training.md).

    blender -b asset.blend -P scripts/render_orbitmesh_views.py -- OUT_DIR [VIEWS=16] [SIZE=256]

Writes ``OUT_DIR/input.png`` (the LRM's source camera at (1, 0, 0), distance 1), ``OUT_DIR/NNN.png``
(VIEWS random orbit views at distance 1.5) and ``OUT_DIR/cameras.json`` in the folder format that
``[data] kind = "folder"`` reads: RGBA frames, Blender camera-to-world matrices, fx = fy = 0.75.
Uses the scene's render engine and lighting (use diffuse-looking lighting). Runs inside Blender only.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import bpy
from mathutils import Vector

FOCAL = 0.75  # fx = fy = lens_mm / sensor_width_mm: the LRM's source intrinsics (27 mm on a 36 mm sensor)


def normalise_scene(scene) -> None:
    """Parent everything to a root that moves the meshes' bounding-box centre to the origin and
    scales their bounding sphere to radius 0.5 (+z up, the LRM's world)."""
    bpy.context.view_layer.update()  # fresh world matrices
    meshes = [o for o in scene.objects if o.type == "MESH" and o.visible_get()]
    points = [o.matrix_world @ v.co for o in meshes for v in o.data.vertices]
    lo = Vector([min(p[i] for p in points) for i in range(3)])
    hi = Vector([max(p[i] for p in points) for i in range(3)])
    centre = (lo + hi) / 2
    scale = 0.5 / max((p - centre).length for p in points)
    root = bpy.data.objects.new("orbitmesh_root", None)
    scene.collection.objects.link(root)
    for o in scene.objects:
        if o.parent is None and o is not root and o.type != "CAMERA":
            o.parent = root
    root.scale = (scale, scale, scale)
    root.location = -centre * scale


def make_camera(scene, size: int):
    """A camera with fx = fy = FOCAL rendering square RGBA PNGs on a transparent film."""
    cam = bpy.data.objects.new("orbitmesh_cam", bpy.data.cameras.new("orbitmesh_cam"))
    scene.collection.objects.link(cam)
    cam.data.sensor_fit, cam.data.sensor_width, cam.data.lens = "HORIZONTAL", 36.0, 36.0 * FOCAL
    scene.camera = cam
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    return cam


def shoot(scene, cam, out: Path, name: str, azimuth: float, elevation: float, distance: float) -> dict:
    """Render one view from (azimuth, elevation) degrees at ``distance``, looking at the origin (+z up)."""
    az, el = math.radians(azimuth), math.radians(elevation)
    cam.location = Vector((distance * math.cos(el) * math.cos(az), distance * math.cos(el) * math.sin(az),
                           distance * math.sin(el)))
    cam.rotation_euler = (-cam.location).to_track_quat("-Z", "Y").to_euler()
    bpy.context.view_layer.update()
    scene.render.filepath = str(out / name)
    bpy.ops.render.render(write_still=True)
    c2w = [list(row) for row in cam.matrix_world[:3]]  # 3x4, Blender's camera convention
    return {"file": name, "c2w": c2w, "fx": FOCAL, "fy": FOCAL, "cx": 0.5, "cy": 0.5}


def main(argv: list[str]) -> None:
    args = argv[argv.index("--") + 1:] if "--" in argv else argv[1:]
    out = Path(args[0])
    views = int(args[1]) if len(args) > 1 else 16
    size = int(args[2]) if len(args) > 2 else 256
    out.mkdir(parents=True, exist_ok=True)
    scene = bpy.context.scene
    normalise_scene(scene)
    cam = make_camera(scene, size)
    rng = random.Random(0)
    frames = [shoot(scene, cam, out, "input.png", 0.0, 0.0, 1.0)]  # the LRM's source camera
    for i in range(views):
        frames.append(shoot(scene, cam, out, f"{i:03d}.png", 360.0 * (i + rng.random()) / views,
                            rng.uniform(-20, 45), 1.5))
    (out / "cameras.json").write_text(json.dumps({"input": "input.png", "frames": frames}, indent=1))
    print(f"wrote {len(frames)} frames to {out}")


if __name__ == "__main__":
    main(sys.argv)
