"""Tokenization and collation for the two formats.

A training row becomes ``prompt + separator + response + eos``; loss is taken on the response and
eos only. Preference batches stack chosen rows on top of rejected rows (``[2B, T]``) so one forward
pass scores both. Evaluation batches also carry the left-padded prompt for greedy generation.
"""

from __future__ import annotations

from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase

IGNORE = -100


def tokenize_split(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, data_format: str, separator: str, max_length: int) -> datasets.Dataset:
    responses = ("completion",) if data_format == "sft" else ("chosen", "rejected")

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out = {"prompt_ids": tokenizer(batch["prompt"], add_special_tokens=True)["input_ids"]}
        for col in responses:
            ids = tokenizer([separator + t for t in batch[col]], add_special_tokens=False)["input_ids"]
            out[f"{col}_ids"] = [x + [tokenizer.eos_token_id] for x in ids]
        # Fit into max_length: keep the whole response when possible, cut the prompt from the left.
        for i, p in enumerate(out["prompt_ids"]):
            longest = max(len(out[f"{c}_ids"][i]) for c in responses)
            room = max(1, max_length - longest)
            out["prompt_ids"][i] = p[-room:]
            for c in responses:
                out[f"{c}_ids"][i] = out[f"{c}_ids"][i][: max_length - len(out["prompt_ids"][i])]
        return out

    return ds.map(encode, batched=True, desc="tokenizing", load_from_cache_file=False)


class Collator:
    """Pads a list of tokenized rows into the tensors the objectives and evaluation read."""

    def __init__(self, pad_id: int, data_format: str, with_generation: bool):
        self.pad_id, self.format, self.with_generation = pad_id, data_format, with_generation

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        responses = ["completion"] if self.format == "sft" else ["chosen", "rejected"]
        seqs, labels = [], []
        for col in responses:  # chosen block first, then rejected block
            for r in rows:
                seqs.append(r["prompt_ids"] + r[f"{col}_ids"])
                labels.append([IGNORE] * len(r["prompt_ids"]) + r[f"{col}_ids"])
        batch: dict[str, Any] = {
            "ids": [r["id"] for r in rows],
            "index": torch.tensor([r["_row"] for r in rows], dtype=torch.long),
            "sources": [r["source"] for r in rows],
            **_pad_right(seqs, labels, self.pad_id),
        }
        for flag in ("is_flipped", "is_corrupted", "ref_chosen_logps", "ref_rejected_logps"):
            if flag in rows[0]:
                batch[flag] = torch.tensor([r[flag] for r in rows])
        if self.with_generation:
            batch.update(_pad_left([r["prompt_ids"] for r in rows], self.pad_id))
            batch["answers"] = [r["answer"] for r in rows]
        return batch


def _pad_right(seqs: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    # Pad as Python lists and convert each field once: one tensor per row would cost a conversion
    # (and an allocation) per sequence.
    t = max(len(s) for s in seqs)
    return {
        "input_ids": torch.tensor([s + [pad_id] * (t - len(s)) for s in seqs], dtype=torch.long),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (t - len(s)) for s in seqs], dtype=torch.long),
        "labels": torch.tensor([l + [IGNORE] * (t - len(l)) for l in labels], dtype=torch.long),
    }


def _pad_left(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    t = max(len(s) for s in seqs)
    return {
        "prompt_input_ids": torch.tensor([[pad_id] * (t - len(s)) + s for s in seqs], dtype=torch.long),
        "prompt_attention_mask": torch.tensor([[0] * (t - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long),
    }
