"""TripoSR (Tripo AI / Stability AI, MIT): DINO ViT tokens, triplane Transformer1D, triplane NeRF decoder/renderer.

The configs import without torch; ``TripoSR`` (the torch module) is imported on first use.
"""

from orbitmesh.models.triposr.config import TripoSRConfig, preset, tiny, triposr

__all__ = ["TripoSR", "TripoSRConfig", "preset", "tiny", "triposr"]


def __getattr__(name: str):
    if name == "TripoSR":
        from orbitmesh.models.triposr.model import TripoSR

        return TripoSR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
