"""VFusion3D LRM: DINOv2 encoder, camera-modulated triplane transformer, triplane NeRF decoder/renderer."""

from orbitmesh.models.lrm.config import EncoderConfig, LRMConfig, preset, tiny, vfusion3d
from orbitmesh.models.lrm.model import LRM

__all__ = ["EncoderConfig", "LRM", "LRMConfig", "preset", "tiny", "vfusion3d"]
