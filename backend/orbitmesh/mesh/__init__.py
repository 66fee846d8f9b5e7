"""The mesh stage: density field -> cleaned, decimated, UV-unwrapped, baked mesh -> GLB/OBJ.

Plain numpy functions; ``field_to_glb`` runs them all. The pieces are public so other
stages (quality-mode texture projection) can reuse the UV mesh and the rasteriser.
"""

from orbitmesh.mesh.api import field_to_glb
from orbitmesh.mesh.bake import Raster, bake_texture, dilate, overlap_texels, rasterize
from orbitmesh.mesh.clean import clean_mesh, orient_outward, vertex_normals
from orbitmesh.mesh.decimate import decimate
from orbitmesh.mesh.export import to_y_up, write_glb, write_obj, write_vertex_color_glb
from orbitmesh.mesh.extract import Extraction, extract_surface
from orbitmesh.mesh.stats import MeshStats
from orbitmesh.mesh.uv import UVMesh, unwrap_uv

__all__ = ["field_to_glb", "MeshStats", "extract_surface", "Extraction", "clean_mesh", "orient_outward",
           "vertex_normals", "decimate", "unwrap_uv", "UVMesh", "rasterize", "overlap_texels", "Raster", "bake_texture",
           "dilate", "write_glb", "write_vertex_color_glb", "write_obj", "to_y_up"]
