"""Reference log-probs, computed once before training and cached on disk.

A reference log-prob depends on exactly two things: the reference weights and the token ids of
(prompt, response). The cache is one directory per reference (named by a hash of its weights)
holding one value per sequence (keyed by a hash of its token ids). Any run against the same
reference reuses every sequence it has seen: a sweep over flip rates and seeds, which only swaps
chosen and rejected, computes the log-probs once. No reference model stays in memory during training.

Concurrent jobs (processes, or nodes sharing the cache over NFS) never rewrite each other's entries:
each writer adds its new values as a shard file of its own, written under a temporary name unique to
host, process and a random id, then renamed into place. A rename within one directory is atomic on
local filesystems and on NFS, and no two writers ever use the same name, so no lock is needed (NFS
locks depend on a lock daemon that many clusters do not run reliably). A reader takes the union of
the shards; once there are many, a writer merges them into one and removes exactly the shards it
merged. A shard that cannot be read (a disk error, a truncated copy) is reported in one line,
removed, and its entries are recomputed.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import datasets
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from assay.data.collate import KL_COMPLETION, REFERENCE_TOKENS, Collator
from assay.data.datamodule import Rows
from assay.models.passes import weights_digest  # noqa: F401  (also read from here by the mixers)
from assay.objectives.logps import pair_logps, sequence_logps
from assay.run.progress import track

COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
HEAD_COLUMNS = ("ref_chosen_head_logps", "ref_rejected_head_logps")
"""LD-DPO: the reference log-probs of each response's first min(|y_w|, |y_l|) tokens. The sum of a
response's first k token log-probs is the log-prob of the response cut to k tokens (a causal model),
so these are cached like any sequence, under the key of the cut response."""
UNPAIRED_COLUMNS = ("ref_logps", "ref_KL_logps")
"""Unpaired rows (KTO): the reference log-probs of the row's completion and of its mismatched (KL)
completion after the row's prompt (TRL's ``ref_logps`` / ``ref_KL_logps``). The two are scored as a
pair would be, so they share the cache with every other sequence."""
TOKEN_COLUMN = REFERENCE_TOKENS
"""SFT rows (RHO-1): the reference log-prob of every completion token, a list per row, cached per
(prompt, completion) sequence beside the sequence log-probs (``TokenCache``)."""
MAX_SHARDS = 16
"""Merge the shards of a reference into one once there are more than this many."""


def sequence_key(prompt_ids: list[int], response_ids: list[int]) -> str:
    return hashlib.blake2b(f"{prompt_ids}|{response_ids}".encode(), digest_size=12).hexdigest()


@torch.no_grad()
def compute_reference_logps(
    model: torch.nn.Module, ds: datasets.Dataset, pad_id: int, batch_size: int, desc: str, collation: Optional[dict] = None
) -> np.ndarray:
    """[N, 2] summed log-probs of (chosen, rejected) under ``model``, in the batch layout ``collation``
    (``ObjectiveConfig.collation``; two sequences per pair when None)."""
    was_training = model.training
    model.eval()
    loader = DataLoader(Rows(ds), batch_size=batch_size, collate_fn=Collator(pad_id, "preference", with_generation=False, **(collation or {})))
    out = []
    device = next(model.parameters()).device
    for batch in track(loader, desc):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        lp = pair_logps(model, batch).sum
        out.append(torch.stack(lp.chunk(2), dim=1).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def cut_to_shared_length(row: dict) -> dict:
    """The pair with both responses cut to the shorter one's length (LD-DPO's shared part)."""
    k = min(len(row["chosen_ids"]), len(row["rejected_ids"]))
    return {"chosen_ids": row["chosen_ids"][:k], "rejected_ids": row["rejected_ids"][:k]}


def attach_reference_logps(
    model: torch.nn.Module, splits: datasets.DatasetDict, pad_id: int, batch_size: int, cache_dir: Path, collation: Optional[dict] = None,
    heads: bool = False,
) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """Add ``ref_chosen_logps`` / ``ref_rejected_logps`` to every split (and, with ``heads``, the
    ``HEAD_COLUMNS`` of LD-DPO); returns the cache file used per split. Unpaired splits (rows with
    ``kl_completion_ids``) get the ``UNPAIRED_COLUMNS`` instead, SFT splits the ``TOKEN_COLUMN``.

    The cached value of a sequence does not depend on the batch layout (``collation``) beyond float
    rounding, so runs with and without a shared prompt share one cache."""
    digest = weights_digest(model)[:24]
    if all("completion_ids" in ds.column_names and KL_COMPLETION not in ds.column_names for ds in splits.values()):  # SFT: per token
        tokens = TokenCache(cache_dir, digest)
        known_tokens, new_tokens = tokens.load(), {}
        for split, ds in splits.items():
            splits[split] = attach_token_logps(model, ds, pad_id, batch_size, tokens, known_tokens, new_tokens, split)
        if new_tokens:
            tokens.add(new_tokens)
        return splits, {split: str(tokens.dir) for split in splits}
    cache = ReferenceCache(cache_dir, digest)
    known = cache.load()
    new: dict[str, float] = {}
    for split, ds in splits.items():
        parts = [(COLUMNS, ds)]
        if KL_COMPLETION in ds.column_names:  # (completion, mismatched completion) scored as (chosen, rejected)
            parts = [(UNPAIRED_COLUMNS, ds.rename_columns({"completion_ids": "chosen_ids", KL_COMPLETION: "rejected_ids"}))]
        elif heads:
            parts.append((HEAD_COLUMNS, ds.map(cut_to_shared_length, desc=f"shared lengths ({split})", load_from_cache_file=False)))
        for columns, pairs in parts:
            keys = {
                col: [sequence_key(p, r) for p, r in zip(pairs["prompt_ids"], pairs[f"{col}_ids"])] for col in ("chosen", "rejected")
            }
            missing = [i for i, (c, r) in enumerate(zip(keys["chosen"], keys["rejected"])) if c not in known or r not in known]
            if missing:
                what = "reference log-probs" if columns is not HEAD_COLUMNS else "reference log-probs of the shared lengths"
                values = compute_reference_logps(model, pairs.select(missing), pad_id, batch_size, f"{what} ({split})", collation)
                fresh = {}
                for j, i in enumerate(missing):
                    fresh[keys["chosen"][i]], fresh[keys["rejected"][i]] = float(values[j, 0]), float(values[j, 1])
                new.update(fresh)
                known.update(fresh)
            for col, name in zip(("chosen", "rejected"), columns):
                if name in ds.column_names:
                    ds = ds.remove_columns(name)
                ds = ds.add_column(name, np.asarray([known[k] for k in keys[col]], dtype=np.float32).tolist())
        splits[split] = ds
    if new:
        cache.add(new)
    return splits, {split: str(cache.dir) for split in splits}


@torch.no_grad()
def attach_token_logps(model: torch.nn.Module, ds: datasets.Dataset, pad_id: int, batch_size: int, cache: "TokenCache",
                       known: dict[str, list], new: dict[str, list], split: str) -> datasets.Dataset:
    """``ds`` (SFT rows) with ``TOKEN_COLUMN``: each completion token's reference log-prob, from the
    token cache; rows not cached yet are scored and added to ``known`` and ``new``."""
    completions = ds["completion_ids"]
    keys = [sequence_key(p, c) for p, c in zip(ds["prompt_ids"], completions)]
    missing = [i for i, k in enumerate(keys) if k not in known]
    if missing:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        loader = DataLoader(Rows(ds.select(missing)), batch_size=batch_size, collate_fn=Collator(pad_id, "sft", with_generation=False))
        rows = iter(missing)
        for batch in track(loader, f"reference token log-probs ({split})"):
            lp = sequence_logps(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["labels"].to(device))
            for tokens, mask in zip(lp.token_logps.float().cpu(), lp.mask.cpu()):
                i = next(rows)
                values = tokens[mask].tolist()
                # an empty prompt leaves the first token without a predictor: its log-prob counts as 0, as in the sums
                known[keys[i]] = new[keys[i]] = [0.0] * (len(completions[i]) - len(values)) + values
        model.train(was_training)
    if TOKEN_COLUMN in ds.column_names:
        ds = ds.remove_columns(TOKEN_COLUMN)
    return ds.add_column(TOKEN_COLUMN, [known[k] for k in keys])


class ReferenceCache:
    """The cached log-probs of one reference: ``<cache_dir>/<digest>/*.parquet`` shards of (key, logp)."""

    def __init__(self, cache_dir: Path, digest: str):
        self.dir = Path(cache_dir) / digest
        self.legacy = Path(cache_dir) / f"{digest}.parquet"  # the single file of earlier versions, read only

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.parquet")) if self.dir.is_dir() else []

    def load(self) -> dict[str, float]:
        known: dict[str, float] = {}
        for path in [self.legacy, *self.shards()]:
            known.update(self._read(path))
        return known

    def add(self, entries: dict[str, float]) -> Path:
        path = self._write(entries)
        shards = self.shards()
        if len(shards) > MAX_SHARDS:
            self._merge(shards)
        return path

    def _read(self, path: Path) -> dict[str, float]:
        try:
            table = pd.read_parquet(path)
            if list(table.columns) != ["key", self.VALUE] or not self._finite(table[self.VALUE]):
                raise ValueError(f"not a table of (key, {self.VALUE}) with finite values")
        except FileNotFoundError:
            return {}  # merged away by another job since it was listed; the merged shard has its entries
        except Exception as e:  # any unreadable file: a truncated copy, a disk error, someone else's file
            why = (str(e).strip().splitlines() or [""])[0][:160]
            print(f"warning: reference log-prob cache file {path} is unreadable ({type(e).__name__}: {why}); "
                  "removing it and recomputing its entries", file=sys.stderr, flush=True)
            path.unlink(missing_ok=True)
            return {}
        return self._entries(table)

    # ---- the stored value: one log-prob per key (a token list in TokenCache) ---------------------
    VALUE: str = "logp"

    @staticmethod
    def _finite(column: pd.Series) -> bool:
        return bool(np.isfinite(column.to_numpy(dtype=np.float64)).all())

    def _entries(self, table: pd.DataFrame) -> dict:
        return dict(zip(table["key"].astype(str), table[self.VALUE].astype(float)))

    def _table(self, entries: dict) -> pd.DataFrame:
        return pd.DataFrame({"key": list(entries), self.VALUE: np.asarray(list(entries.values()), dtype=np.float64)})

    def _write(self, entries: dict[str, float]) -> Path:
        """A new shard, written under a name no other writer on any host can pick, renamed into place."""
        self.dir.mkdir(parents=True, exist_ok=True)
        unique = f"{time.time_ns()}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
        path, tmp = self.dir / f"{unique}.parquet", self.dir / f".{unique}.tmp"
        self._table(entries).to_parquet(tmp, index=False)
        os.replace(tmp, path)
        return path

    def _merge(self, shards: list[Path]) -> None:
        """One shard for many: write the union first, then remove only the shards that went into it
        (shards other jobs add meanwhile stay; two jobs merging at once only duplicate entries)."""
        merged: dict[str, float] = {}
        read = []
        for path in shards:
            entries = self._read(path)
            if entries:
                merged.update(entries)
                read.append(path)
        if len(read) < 2:
            return
        self._write(merged)
        for path in read:
            path.unlink(missing_ok=True)


class TokenCache(ReferenceCache):
    """The cached per-token log-probs of one reference (RHO-1): ``<cache_dir>/<digest>-tokens/*.parquet``
    shards of (key, logps), one list of completion-token log-probs per (prompt, completion) sequence,
    written and merged like the sequence log-probs."""

    VALUE = "logps"

    def __init__(self, cache_dir: Path, digest: str):
        super().__init__(cache_dir, f"{digest}-tokens")

    @staticmethod
    def _finite(column: pd.Series) -> bool:
        return all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in column)

    def _entries(self, table: pd.DataFrame) -> dict:
        return {str(k): [float(x) for x in v] for k, v in zip(table["key"], table[self.VALUE])}

    def _table(self, entries: dict) -> pd.DataFrame:
        return pd.DataFrame({"key": list(entries), self.VALUE: [np.asarray(v, dtype=np.float64) for v in entries.values()]})
