"""OrbitMesh: local image/text-to-3D (SV3D orbit views + VFusion3D LRM) for Blender.

Importing this package is cheap: no torch, no model loading, no downloads.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
