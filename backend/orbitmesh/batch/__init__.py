"""``orbitmesh batch``: many inputs -> one GLB each in one folder, through one executor (models loaded once).

:mod:`~orbitmesh.batch.inputs` turns INPUTS (images, folders, prompt lists, manifests) into items,
:mod:`~orbitmesh.batch.record` keeps ``OUT_DIR/batch.json`` (item states, content keys, what a rerun keeps) and
:mod:`~orbitmesh.batch.run` runs the items on the executor's workers. Torch-free at import.
"""

from __future__ import annotations

from orbitmesh.batch.inputs import BatchItem, collect_items
from orbitmesh.batch.record import BatchSummary, read_summary
from orbitmesh.batch.run import run_batch

__all__ = ["BatchItem", "BatchSummary", "collect_items", "read_summary", "run_batch"]
