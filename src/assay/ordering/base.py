"""What every ordering shares: the base class (kept rows + keys + epoch + seed -> a permutation) and
where the keys come from (the selection scores, a column of the training split, a Parquet file of
scores), checked before anything is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from omegaconf import II, MISSING

from assay.errors import UserError


@dataclass
class OrderingConfig:
    name: str = MISSING
    seed: int = II("seed")
    removed_options: ClassVar[dict[str, str]] = {
        "upsample_end": "mixture=schedule mixture.upsample=[<domains>] mixture.last_fraction=0.2 mixture.factor=3 (the one "
                        "end-of-training upsampling, Blakeney et al. 2024: drawn with replacement, as the paper samples)",
    }
    """Orderings that were removed and the spelling that does what each did (``assay.errors.removed_option``)."""

    def keys(self, train, selection_scores: np.ndarray) -> np.ndarray:
        """One value per training row that :meth:`order` reads as ``scores`` (default: the selection
        scores). Resolved once before training, so ``order`` stays a pure function."""
        return np.asarray(selection_scores)

    @property
    def sorts_by_keys(self) -> bool:
        """True when the order depends on the keys (curricula, folding, blocks by group): with one
        key for every row such an ordering is a plain shuffle, which :meth:`row_keys` refuses."""
        return False

    @property
    def key_source(self) -> tuple[str, str]:
        """(config field, value) that says where the keys come from, for messages."""
        return "ordering", self.name

    def check_selection(self, selection) -> None:
        """Before anything is built: an ordering that sorts by the selection scores needs a scorer
        that gives some (``selection.scores_examples``)."""
        field, value = self.key_source
        if self.sorts_by_keys and value == "selection" and not selection.scores_examples:
            raise UserError(field, value, f"selection={selection.name} gives every example the same score, so ordering={self.name} "
                            f"would be a plain shuffle; choose a scorer (selection=...), order by keys that vary ({field}=...) or use ordering=random")

    def row_keys(self, rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The keys of ``rows`` (see :func:`keys_for_rows`), refused when the ordering sorts by them
        and they are all equal: e.g. a curriculum over ``selection=none``'s all-zero scores, or over
        the ``difficulty`` of data that has none, would silently be a random order."""
        keys = keys_for_rows(rows, scores)
        if self.sorts_by_keys and len(keys) > 1 and len(set(np.asarray(keys).tolist())) == 1:
            field, value = self.key_source
            key = np.asarray(keys)[0]
            key = key.item() if isinstance(key, np.generic) else key
            raise UserError(field, value, constant_keys_message(self.name, field, value, key, len(keys)))
        return keys

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


def check_score_file(source: str, field: str) -> None:
    """Before anything is built: a score file named by path exists and is Parquet with ``id`` and
    ``score`` (the footer alone is read, so this costs nothing on large files)."""
    if not (source.endswith(".parquet") or "/" in source):
        return  # a column name or ``selection``; resolve_keys checks those against the data
    if not Path(source).is_file():
        raise UserError(field, source, "file does not exist (give selection, a training column, or a Parquet file with id and score)")
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(source).schema_arrow.names
    except Exception as e:  # not Parquet, truncated, unreadable: Arrow's errors vary by cause
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(field, source, f"is not a readable Parquet file ({reason}); give one with columns id and score") from None
    if not {"id", "score"} <= set(names):
        raise UserError(field, source, f"needs columns id and score; it has {names}")


def constant_keys_message(name: str, field: str, source: str, key, n: int) -> str:
    hint = {
        "selection": "the selection gives every example the same score (selection=none scores nothing); choose a scorer",
        "difficulty": "the data has no difficulty levels (-1 = none given)" if key == -1 else "the data has one difficulty level",
    }.get(source, "")
    return (f"gives all {n} rows the same key ({key!r}), so ordering={name} would be a plain shuffle"
            f"{'; ' + hint if hint else ''}; order by keys that vary ({field}=...) or use ordering=random")


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
        try:
            table = pd.read_parquet(source)
        except Exception as e:  # not Parquet, truncated, or unreadable: Arrow's errors vary by cause
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError(field, source, f"is not a readable Parquet file ({reason}); give one with columns id and score") from None
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
