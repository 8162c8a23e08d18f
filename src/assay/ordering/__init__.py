"""Orderings (config group ``ordering``): kept rows + scores + epoch + seed -> a permutation.

Orderings are pure and seeded; one resumable sampler (``assay.ordering.sampler``) serves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import II, MISSING

from assay.errors import UserError
from assay.registry import register


@dataclass
class OrderingConfig:
    name: str = MISSING
    seed: int = II("seed")

    def keys(self, train, selection_scores: np.ndarray) -> np.ndarray:
        """One value per training row that :meth:`order` reads as ``scores`` (default: the selection
        scores). Resolved once before training, so ``order`` stays a pure function."""
        return np.asarray(selection_scores)

    def for_run(self, total_rows: int) -> "OrderingConfig":
        """This ordering for a run that serves ``total_rows`` rows in all (orderings that place
        something at a point of training, not of an epoch, read it; the rest ignore it)."""
        return self

    def order(self, rows: np.ndarray, scores: np.ndarray, epoch: int) -> np.ndarray:
        """The rows to visit in epoch ``epoch`` (a permutation of ``rows``)."""
        raise TypeError(f"{type(self).__name__} does not implement order()")


def keys_for_rows(rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The key of each row: ``scores`` is either aligned with ``rows`` or indexed by row number
    (one value per training row, as the run passes it)."""
    rows, scores = np.asarray(rows), np.asarray(scores)
    if len(scores) == len(rows):
        return scores
    if len(rows) and len(scores) > int(rows.max()):
        return scores[rows]
    raise ValueError(f"{len(scores)} keys for {len(rows)} rows (max row {rows.max() if len(rows) else None})")


def resolve_keys(train, selection_scores: np.ndarray, source: str, field: str, numeric: bool) -> np.ndarray:
    """Per-row values from ``source``: ``selection``, a column of ``train``, or a Parquet file with
    ``id`` and ``score``. Any id without a value is an error naming how many and which."""
    ids = list(train["id"])
    if source == "selection":
        values = np.asarray(selection_scores, dtype=np.float64)
        missing = np.isnan(values)
    elif source in train.column_names:
        raw = list(train[source])
        missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in raw])
        values = np.array([np.nan if m else v for v, m in zip(raw, missing)], dtype=np.float64 if numeric else object)
    elif source.endswith(".parquet") or Path(source).is_file():
        import pandas as pd

        if not Path(source).is_file():
            raise UserError(field, source, "file does not exist (give selection, a training column, or a Parquet file with id and score)")
        table = pd.read_parquet(source)
        if not {"id", "score"} <= set(table.columns):
            raise UserError(field, source, f"needs columns id and score; it has {list(table.columns)}")
        by_id = dict(zip(table["id"].astype(str), table["score"].astype(float)))
        values = np.array([by_id.get(str(i), np.nan) for i in ids], dtype=np.float64)
        missing = np.isnan(values)
    else:
        raise UserError(field, source, f"must be 'selection', a column of the training split {sorted(train.column_names)}, or a Parquet file with id and score")
    if missing.any():
        examples = [ids[i] for i in np.flatnonzero(missing)[:3]]
        raise UserError(field, source, f"has no value for {int(missing.sum())} of {len(ids)} training ids (e.g. {examples}); every id needs one")
    if numeric:
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise UserError(field, source, "must hold numbers to order by") from None
    return values


@register("ordering", "random")
@dataclass
class RandomOrdering(OrderingConfig):
    """A fresh seeded shuffle every epoch."""

    name: str = "random"

    def order(self, rows: np.ndarray, scores: np.ndarray, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        return rows[rng.permutation(len(rows))]


@register("ordering", "sequential")
@dataclass
class SequentialOrdering(OrderingConfig):
    """Dataset order, every epoch (sources appear as the data lists them)."""

    name: str = "sequential"

    def order(self, rows: np.ndarray, scores: np.ndarray, epoch: int) -> np.ndarray:
        return np.array(rows)
