"""Text helpers shared by tokenizer training and evaluation."""

from __future__ import annotations

from typing import Iterator

import datasets

TEXT_COLUMNS = ("prompt", "completion", "chosen", "rejected")


def corpus_texts(ds: datasets.Dataset) -> Iterator[str]:
    for column in TEXT_COLUMNS:
        if column in ds.column_names:
            yield from ds[column]
    if "responses" in ds.column_names:
        for rs in ds["responses"]:
            yield from rs


def corpus_alphabet(splits: datasets.DatasetDict) -> set[str]:
    chars: set[str] = set()
    for ds in splits.values():
        for text in corpus_texts(ds):
            chars.update(text)
    chars.discard(" ")
    return chars


def normalise_answer(text: str) -> str:
    """Exact match compares answers up to whitespace (tokenizers differ in how they decode spaces)."""
    return " ".join(text.split())
