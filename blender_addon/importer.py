"""Bring a finished job's GLB into the scene (main thread only).

glTF importer -> one mesh object named after the input, transforms baked, origin at the
bottom centre, largest dimension scaled to ``size``, placed at the 3D cursor, selected and
active, with the job's settings in custom properties. Everything happens inside the calling
operator, so a single undo step removes it. The placement arithmetic is ``core.placement``; the
metadata comes from ``core.jobs.object_metadata``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix

from .core.errors import AddonError
from .core.placement import fit_to_size

PROP_PREFIX = "orbitmesh_"


def _vertex_array(mesh) -> np.ndarray:
    """(N, 3) float64 vertex positions of ``mesh``."""
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3).astype(np.float64)


def import_glb(context, glb_path: str, *, name: str, size: float, location=None,
               metadata: dict[str, Any] | None = None):
    """Import ``glb_path`` and return the new, selected and active mesh object (AddonError when it cannot)."""
    if not os.path.isfile(glb_path):
        raise AddonError(f"the result file is missing: {glb_path}", fix="regenerate the job")
    before = set(bpy.data.objects)
    try:
        result = bpy.ops.import_scene.gltf(filepath=glb_path)
    except RuntimeError as exc:
        raise AddonError(f"Blender's glTF importer failed on {os.path.basename(glb_path)}: {exc}",
                           fix="check the file in the job folder; regenerate") from None
    if "FINISHED" not in result:
        raise AddonError(f"Blender's glTF importer could not read {glb_path}", fix="regenerate the job")
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH"]
    if not meshes:
        for o in new:
            bpy.data.objects.remove(o)
        raise AddonError("the GLB holds no mesh", fix="regenerate the job")
    obj = meshes[0]
    if len(meshes) > 1:  # our GLBs hold one mesh; join anything else so the result stays one object
        with context.temp_override(active_object=obj, selected_editable_objects=meshes,
                                   selected_objects=meshes):
            bpy.ops.object.join()
    # Bake the importer's transforms (Y-up -> Z-up, parents) into the mesh, then drop helpers.
    world = obj.matrix_world.copy()
    obj.parent = None
    obj.data.transform(world)
    obj.matrix_world = Matrix.Identity(4)
    for other in new:
        if other != obj and other.name in bpy.data.objects and other.type != "MESH":
            bpy.data.objects.remove(other)

    co = _vertex_array(obj.data)
    if len(co) == 0:
        raise AddonError("the generated mesh is empty", fix="try another image or a higher mesh resolution")
    scale, offset = fit_to_size(co.min(axis=0), co.max(axis=0), size)
    obj.data.transform(Matrix.Scale(scale, 4) @ Matrix.Translation(offset))
    obj.data.update()
    obj.location = location if location is not None else context.scene.cursor.location

    obj.name = name
    obj.data.name = name
    for i, slot in enumerate(obj.material_slots):
        if slot.material is not None and slot.material.users == 1:
            slot.material.name = name if i == 0 else f"{name}.{i}"
    for key, value in (metadata or {}).items():
        obj[PROP_PREFIX + key] = value if isinstance(value, (int, float, str)) else json.dumps(value)

    for other in context.view_layer.objects:
        if other.select_get():
            other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    return obj


def material_image(obj):
    """The image feeding the first material's base colour, or None (used by checks and tests)."""
    mat = obj.active_material
    if mat is None or not mat.use_nodes:
        return None
    for node in mat.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            links = node.inputs["Base Color"].links
            if links and links[0].from_node.type == "TEX_IMAGE":
                return links[0].from_node.image
    return None
