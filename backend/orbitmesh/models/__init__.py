"""Models: torch modules and their checkpoint loading.

Nothing here imports torch at package import time; import the submodules
(:mod:`orbitmesh.models.lrm`, :mod:`orbitmesh.models.video`) when you need them.
:mod:`orbitmesh.models.registry` lists the known models and resolves a model argument.
"""
