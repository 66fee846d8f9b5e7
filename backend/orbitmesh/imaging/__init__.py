"""Image handling shared by the pipeline: robust loading, background removal, recentring.

Plain PIL/numpy/scikit-image code; no torch. The pipeline stage that ties these together
is :mod:`orbitmesh.pipeline.preprocess`.
"""

from orbitmesh.imaging.load import load_image

__all__ = ["load_image"]
