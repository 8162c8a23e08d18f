"""Per-batch selection: train each step on a subset of a larger drawn batch (CoLM's coresets)."""

from assay.batch_selection.base import BatchSelection, WholeBatch

__all__ = ["BatchSelection", "WholeBatch"]
