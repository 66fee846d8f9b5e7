"""Models: torch modules and their checkpoint loading.

Nothing here imports torch at package import time; import the submodules
(:mod:`orbitmesh.models.lrm`, :mod:`orbitmesh.models.video`) when you need them.
:mod:`orbitmesh.models.catalogue` lists every known model (torch-free);
:mod:`orbitmesh.models.registry` resolves and loads a reconstruction model, :mod:`orbitmesh.models.text_to_image`
a diffusers text-to-image pipeline.
"""
