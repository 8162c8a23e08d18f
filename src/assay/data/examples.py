"""A run's examples: every source loaded and checked, then mixed and noised into one
``datasets.DatasetDict`` with stable ids (and, for a static token mixture, the model and its
tokenizer first, since the mixture counts tokens)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

from assay.data.mixture import MixtureConfig
from assay.data.noise import NoiseConfig
from assay.data.sources import DataConfig
from assay.errors import UserError
from assay.lazy import datasets


@dataclass
class Examples:
    splits: datasets.DatasetDict
    source_counts: dict[str, int]
    """Realised training examples per source after mixing."""


def load_pool(data: DataConfig, mixture: MixtureConfig) -> datasets.DatasetDict:
    """Every source loaded and checked, before any mixing."""
    domains = data.domain_names()
    if domains is not None:
        mixture.check_domains(domains)  # a weight naming an unknown domain fails before loading
    splits = data.capped(data.load())
    for split, ds in splits.items():
        if len(ds) == 0:
            raise UserError(f"data ({split} split)", data.name, "has no examples")
        ids = ds["id"]
        if len(set(ids)) != len(ids):
            raise UserError(f"data ({split} split)", data.name, "has duplicate ids; ids must be unique per split")
        _check_texts(ds, data, split)
    if data.weight_column is not None:
        splits = datasets.DatasetDict({split: example_weights(ds, data.weight_column, split) for split, ds in splits.items()})
    return splits


WEIGHT = "weight"
"""The column a batch reads per-example weights from (``data.weight_column`` is copied into it)."""


def example_weights(ds: datasets.Dataset, column: str, split: str) -> datasets.Dataset:
    """The split with ``weight`` = ``column`` as floats, each finite and ≥ 0 (the train split must have
    the column and a positive total; val and test use theirs where they have it, evaluation being unweighted)."""
    import math

    if column not in ds.column_names:
        if split != "train":
            return ds
        raise UserError("data.weight_column", column, f"the train split has no such column (it has {ds.column_names})")
    values = []
    for row_id, value in zip(ds["id"], ds[column]):
        try:
            w = float(value)
        except (TypeError, ValueError):
            w = float("nan")
        if isinstance(value, bool) or not math.isfinite(w) or w < 0:
            raise UserError("data.weight_column", column, f"must hold a finite number >= 0 in every row; id {row_id} ({split} split) has {value!r}")
        values.append(w)
    if split == "train" and not sum(values) > 0:
        raise UserError("data.weight_column", column, "every training weight is 0")
    if column != WEIGHT and WEIGHT in ds.column_names:
        raise UserError("data.weight_column", column, f"the data already has a column {WEIGHT!r}, which batches read weights from; use data.weight_column={WEIGHT}")
    return ds.remove_columns([WEIGHT]).add_column(WEIGHT, values) if WEIGHT in ds.column_names else ds.add_column(WEIGHT, values)


def build_examples(data: DataConfig, mixture: MixtureConfig, noise: NoiseConfig, lengths=None, pool=None,
                   pairs: Optional[Callable[[datasets.Dataset], datasets.Dataset]] = None) -> Examples:
    """Sources -> mixture -> (on-policy pairs) -> noise. ``lengths``: tokens per training row of ``pool``
    (token mixtures). ``pairs``: replaces the mixed training split's pairs before noise (``data.pairs=on_policy``:
    noise then flips the model's own samples)."""
    on_policy = getattr(data, "pairs", "rated") == "on_policy"
    if on_policy and pairs is None:
        raise UserError("data.pairs", "on_policy", "samples the pairs from the run's model, and this command builds data without one")
    splits = pool if pool is not None else load_pool(data, mixture)
    train, counts = mixture.apply(splits["train"], data.domain_weights(), lengths)
    if on_policy:
        train = pairs(train)
        counts = {source: n for source, n in Counter(train["source"]).items()} if "source" in train.column_names else counts
    splits = datasets.DatasetDict({**splits, "train": noise.apply(train, data.format)})
    return Examples(splits, counts)


def build_examples_and_model(spec, pairs: Optional[Callable] = None) -> tuple[Examples, object, object]:
    """Examples, model and tokenizer. A static token mixture needs each example's token count, so
    its tokenizer (trained on the unmixed pool for models without a vocabulary) comes first; on-policy
    pairs (``data.pairs=on_policy``) need the model first too: ``pairs(train, model, tokenizer)`` builds them
    (``assay.models.onpolicy``, passed in by the command: data does not import models)."""
    on_policy = getattr(spec.data, "pairs", "rated") == "on_policy"
    if not spec.mixture.needs_lengths and not on_policy:
        examples = build_examples(spec.data, spec.mixture, spec.noise)
        return (examples, *spec.model.build(examples.splits))
    from assay.data.collate import row_tokens, tokenize_split

    pool = load_pool(spec.data, spec.mixture)
    model, tokenizer = spec.model.build(pool)
    data = spec.data
    lengths = None
    if spec.mixture.needs_lengths:
        lengths = row_tokens(tokenize_split(pool["train"], tokenizer, data.format, data.separator, data.max_length), data.format)
    build = (lambda train: pairs(train, model, tokenizer)) if on_policy and pairs is not None else None
    return build_examples(data, spec.mixture, spec.noise, lengths, pool, build), model, tokenizer


def _check_texts(ds: datasets.Dataset, data: DataConfig, split: str) -> None:
    for column in data.text_columns[1:]:
        empty = [i for i, t in zip(ds["id"], ds[column]) if not t or not str(t).strip()]
        if empty:
            raise UserError(f"data.{column}", f"'' (id {empty[0]}, {split} split)", f"{len(empty)} example(s) have an empty {column}")
    if data.format == "preference":
        same = [i for i, c, r in zip(ds["id"], ds["chosen"], ds["rejected"]) if c == r]
        if same:
            raise UserError("data.rejected", f"id {same[0]} ({split} split)", f"{len(same)} pair(s) have identical chosen and rejected")
