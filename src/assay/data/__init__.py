"""Examples: sources -> mixture -> noise, one ``datasets.DatasetDict`` with stable ids."""

from __future__ import annotations

from dataclasses import dataclass

from assay.lazy import datasets

from assay.data.mixture import MixtureConfig
from assay.data.noise import NoiseConfig
from assay.data.sources import DataConfig
from assay.errors import UserError


@dataclass
class Examples:
    splits: datasets.DatasetDict
    source_counts: dict[str, int]
    """Realised training examples per source after mixing."""


def build_examples(data: DataConfig, mixture: MixtureConfig, noise: NoiseConfig) -> Examples:
    splits = data.capped(data.load())
    for split, ds in splits.items():
        if len(ds) == 0:
            raise UserError(f"data ({split} split)", data.name, "has no examples")
        ids = ds["id"]
        if len(set(ids)) != len(ids):
            raise UserError(f"data ({split} split)", data.name, "has duplicate ids; ids must be unique per split")
        _check_texts(ds, data, split)
    train, counts = mixture.apply(splits["train"])
    splits["train"] = noise.apply(train, data.format)
    return Examples(splits, counts)


def _check_texts(ds: datasets.Dataset, data: DataConfig, split: str) -> None:
    for column in data.text_columns[1:]:
        empty = [i for i, t in zip(ds["id"], ds[column]) if not t or not str(t).strip()]
        if empty:
            raise UserError(f"data.{column}", f"'' (id {empty[0]}, {split} split)", f"{len(empty)} example(s) have an empty {column}")
    if data.format == "preference":
        same = [i for i, c, r in zip(ds["id"], ds["chosen"], ds["rejected"]) if c == r]
        if same:
            raise UserError("data.rejected", f"id {same[0]} ({split} split)", f"{len(same)} pair(s) have identical chosen and rejected")
