"""Procedural training data: SDF shapes, a sphere tracer, multi-view datasets (part of ``orbitmesh[train]``)."""
