"""Text helpers shared by tokenizer training and evaluation."""

from __future__ import annotations

from typing import Iterator

from assay.errors import UserError
from assay.lazy import datasets

TEXT_COLUMNS = ("prompt", "completion", "chosen", "rejected")


def response_column(ds: datasets.Dataset) -> str:
    """The response an example is judged by: ``completion`` (SFT) or ``chosen`` (preference pairs),
    found by its text or by its token ids (``<name>_ids``)."""
    for col in ("completion", "chosen"):
        if col in ds.column_names or f"{col}_ids" in ds.column_names:
            return col
    raise UserError("data", ds.column_names, "an example needs a 'completion' or 'chosen' response (text or token ids)")


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
