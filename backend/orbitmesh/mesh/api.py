"""field_to_glb: density field + colour function -> textured GLB (or OBJ, or vertex colours)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from orbitmesh.errors import InputError
from orbitmesh.mesh.bake import ColorFn, Raster, bake_texture, check_color_fn, eval_color_fn, rasterize
from orbitmesh.mesh.clean import clean_mesh, orient_outward, vertex_normals
from orbitmesh.mesh.decimate import decimate
from orbitmesh.mesh.export import write_glb, write_obj, write_vertex_color_glb
from orbitmesh.mesh.extract import extract_surface
from orbitmesh.mesh.stats import MeshStats
from orbitmesh.mesh.uv import UVMesh, unwrap_uv
from orbitmesh.progress import ProgressCallback, null_progress

FORMATS = (".glb", ".obj")

# (uv mesh) -> (S, S, 3) uint8 texture: replaces the per-texel bake (quality mode projects views).
TextureFn = Callable[[UVMesh], np.ndarray]
# (uv mesh, raster, texel points (T, 3), baked colours (T, 3)) -> (T, 3) colours: changes the bake (fast mode).
# One with a ``prepare(vertices, faces)`` method is also told the final surface before the UVs are made, and one
# with ``replaced(uv mesh, raster, points)`` -> (T,) bool names the texels it replaces outright (not baked).
TexelAdjust = Callable[[UVMesh, Raster, np.ndarray, np.ndarray], np.ndarray]


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the isolated xatlas run)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _check_options(target_faces: int, texture_size: int, out_path) -> Path:
    if isinstance(target_faces, bool) or not isinstance(target_faces, (int, np.integer)) or target_faces < 100:
        raise InputError(f"target_faces must be an integer >= 100, got {target_faces!r}",
                         fix="pass e.g. target_faces=20000")
    if isinstance(texture_size, bool) or not isinstance(texture_size, (int, np.integer)) \
            or not 16 <= texture_size <= 8192:
        raise InputError(f"texture_size must be an integer in 16..8192, got {texture_size!r}",
                         fix="pass e.g. texture_size=1024")
    path = Path(out_path)
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"unsupported output format {path.suffix!r} for {path.name}",
                         fix=f"use one of {', '.join(FORMATS)}")
    return path


def field_to_glb(density, color_fn: ColorFn, *, bbox=(-1, 1), threshold: float, target_faces: int = 20000,
                 texture_size: int = 1024, out_path, progress: ProgressCallback | None = None,
                 vertex_colors: bool = False, close_boundary: bool = False,
                 min_component_fraction: float = 0.01, extract_stride: int | None = None,
                 uv_options: dict | None = None, texture_fn: TextureFn | None = None,
                 texel_adjust: TexelAdjust | None = None, name: str | None = None) -> MeshStats:
    """Mesh a density field and write it as a textured glTF 2.0 binary (or OBJ + MTL + PNG).

    density: (R, R, R) float array over ``bbox`` (indexing 'ij', samples on the box corners);
    inside is ``density > threshold``. color_fn: (N, 3) float32 world points -> (N, 3)
    colours in [0, 1] (sRGB). Steps: coarse-to-fine marching cubes -> remove degenerate and
    duplicate faces and floaters (components under ``min_component_fraction`` of the faces)
    -> quadric decimation to ``target_faces`` -> outward normals -> xatlas UVs (isolated
    process) -> per-texel bake of color_fn with seam dilation -> export.

    The field's world is z-up; the file is y-up: (x, y, z) -> (x, z, -y). The GLB has one
    mesh, one material (base colour texture, metallic 0, roughness 1), normals and UVs.
    ``out_path`` ending in .obj writes OBJ + MTL + PNG; ``vertex_colors=True`` writes a
    quick preview GLB with per-vertex colours and no UVs/texture. A surface touching the
    bbox raises InputError unless ``close_boundary=True`` caps it. ``progress("mesh", step,
    total, name)`` is called before each step and may raise JobCancelled; any error leaves
    nothing at ``out_path``. ``extract_stride`` (1 = full-resolution marching cubes) and
    ``uv_options`` (keywords of :func:`unwrap_uv`) override the speed choices.
    ``texture_fn(uv_mesh)`` (UV mesh in the field's world) -> (S, S, 3) uint8 replaces the
    bake (``color_fn`` is then unused); ``texel_adjust(uv_mesh, raster, points, colours)`` keeps the
    bake but changes its texel colours before the seams are dilated; when it has a ``prepare(vertices, faces)``
    method, that is called with the final surface (unsplit, before the UVs) so it can start its UV-free work
    while xatlas runs in its own process, and when it has ``replaced(uv_mesh, raster, points)`` -> (T,) bool,
    ``color_fn`` is not evaluated at the texels it names (it replaces their colours outright). ``name`` names
    the mesh inside the file (default: the output file's stem).
    """
    path = _check_options(target_faces, texture_size, out_path)
    mesh_name = name or path.stem
    if texture_fn is None:
        check_color_fn(color_fn)
    progress = progress or null_progress
    steps = ["extract", "clean", "decimate", "normals"] + ([] if vertex_colors else ["uv", "bake"]) + ["export"]
    stats = MeshStats(texture_size=0 if vertex_colors else int(texture_size), out_path=str(path))
    current: list = [None, 0.0, 0.0]  # step running, its wall and CPU start times

    def step(name: str | None) -> None:
        if current[0] is not None:
            stats.timings[current[0]] = time.perf_counter() - current[1]
            stats.cpu_timings[current[0]] = _cpu_seconds() - current[2]
        if name is not None:
            progress("mesh", steps.index(name), len(steps), name)  # may raise JobCancelled
            current[:] = [name, time.perf_counter(), _cpu_seconds()]

    step("extract")
    ex = extract_surface(density, threshold, bbox=bbox, target_faces=target_faces,
                         stride=extract_stride, close_boundary=close_boundary)
    stats.extract_stride, stats.extracted_faces, stats.boundary_closed = ex.stride, len(ex.faces), ex.boundary_closed
    if ex.boundary_closed:
        stats.warnings.append("the surface touched the bbox and was capped at the box")

    step("clean")
    v, f, report = clean_mesh(ex.vertices, ex.faces, min_component_fraction=min_component_fraction)
    stats.components_removed = report.components_removed

    step("decimate")
    v, f = decimate(v, f, target_faces)
    v, f, _ = clean_mesh(v, f, min_component_fraction=0.0)

    step("normals")
    f = orient_outward(v, f)
    normals = vertex_normals(v, f)

    if vertex_colors:
        step("export")
        colors = eval_color_fn(color_fn, v, 262_144)
        write_vertex_color_glb(path, v, f, normals, colors, name=mesh_name)
        stats.faces, stats.vertices = len(f), len(v)
    else:
        step("uv")
        if hasattr(texel_adjust, "prepare"):
            texel_adjust.prepare(v, f)
        uvm = unwrap_uv(v, f, texture_size=texture_size, **(uv_options or {}))
        stats.charts = uvm.charts
        if uvm.repaired_faces:
            how = "a per-triangle fallback atlas" if uvm.fallback else "charts of their own"
            stats.warnings.append(f"xatlas left {uvm.repaired_faces} overlapping faces; they were moved to {how}")

        step("bake")
        if texture_fn is None:
            adjust = None if texel_adjust is None else (lambda r, p, c: texel_adjust(uvm, r, p, c))
            replaced = (lambda r, p: texel_adjust.replaced(uvm, r, p)) if hasattr(texel_adjust, "replaced") else None
            texture, raster = bake_texture(uvm.vertices, uvm.faces, uvm.uvs, color_fn, texture_size, adjust=adjust,
                                           replaced=replaced)
            stats.uv_coverage = raster.coverage
        else:
            texture = np.asarray(texture_fn(uvm))
            if texture.shape != (texture_size, texture_size, 3) or texture.dtype != np.uint8:
                raise ValueError(f"texture_fn returned {texture.dtype} {texture.shape}, "
                                 f"expected uint8 ({texture_size}, {texture_size}, 3)")
            stats.uv_coverage = rasterize(uvm.uvs, uvm.faces, texture_size).coverage

        step("export")
        n = normals[uvm.vmap]
        if path.suffix.lower() == ".obj":
            write_obj(path, uvm.vertices, uvm.faces, n, uvm.uvs, texture, name=mesh_name)
        else:
            write_glb(path, uvm.vertices, uvm.faces, n, uvm.uvs, texture, name=mesh_name)
        stats.faces, stats.vertices = len(uvm.faces), len(uvm.vertices)
    step(None)
    return stats
