"""OrbitMesh: local image/text-to-3D (SV3D orbit views + VFusion3D LRM) for Blender.

Importing this package is cheap: no torch, no model loading, no downloads. The top-level
exports are resolved on first use (like diffusers)::

    from orbitmesh import generate, GenerateRequest
    result = generate(GenerateRequest(image_path="chair.png"))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# exported name -> module that defines it; imported only when the name is first used
_LAZY_EXPORTS = {
    "generate": "orbitmesh.pipeline.generate",
    "GenerateRequest": "orbitmesh.pipeline.request",
    "GenerateResult": "orbitmesh.pipeline.request",
}

__all__ = ["GenerateRequest", "GenerateResult", "__version__", "generate"]  # = _LAZY_EXPORTS + version

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports them
    from orbitmesh.pipeline.generate import generate
    from orbitmesh.pipeline.request import GenerateRequest, GenerateResult


def __getattr__(name: str) -> Any:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_EXPORTS})
