"""Embedder ``column``: precomputed vectors from a column of the data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.embeddings.base import EmbedderConfig
from assay.errors import UserError, check
from assay.lazy import datasets
from assay.registry import register


@register("embedder", "column")
@dataclass
class Column(EmbedderConfig):
    """A precomputed embedding column of the data (a list of floats per example)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/ot/test_ot.py: NaN vectors are refused; the OT entries run on it",
        notes="Precomputed vectors from a column of the data: bring any embedder (e.g. GOT-D's target-tuned distilBERT).",
    )

    name: str = "column"
    column: str = "embedding"
    """Name of the column holding the vectors."""
    cache: bool = False

    @property
    def data_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def compute(self, ds: datasets.Dataset, model: Any, tokenizer: Any) -> np.ndarray:
        if self.column not in ds.column_names:
            raise UserError("selection.embedder_options.column", self.column, f"not a column of the data; columns are {ds.column_names}")
        values = ds[self.column]
        lengths = {len(v) for v in values}
        check(len(lengths) <= 1, "selection.embedder_options.column", self.column, f"vectors must all have one length; found lengths {sorted(lengths)[:5]}")
        return np.asarray(values, dtype=np.float32).reshape(len(values), -1)
