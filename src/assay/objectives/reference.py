"""Reference log-probs, computed once before training and cached on disk.

A reference log-prob depends on exactly two things: the reference weights and the token ids of
(prompt, response). The cache is one file per reference (named by a hash of its weights) holding
one value per sequence (keyed by a hash of its token ids). Any run against the same reference
reuses every sequence it has seen: a sweep over flip rates and seeds, which only swaps chosen and
rejected, computes the log-probs once. No reference model stays in memory during training.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

import datasets
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from assay.data.collate import Collator
from assay.data.datamodule import Rows
from assay.objectives.logps import pair_logps

COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    for batch in tqdm(loader, desc=desc, leave=False):
        lp = pair_logps(model, batch).sum
        out.append(torch.stack(lp.chunk(2), dim=1).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def attach_reference_logps(
    model: torch.nn.Module, splits: datasets.DatasetDict, pad_id: int, batch_size: int, cache_dir: Path, collation: Optional[dict] = None
) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """Add ``ref_chosen_logps`` / ``ref_rejected_logps`` to every split; returns the cache file used per split.

    The cached value of a sequence does not depend on the batch layout (``collation``) beyond float
    rounding, so runs with and without a shared prompt share one cache."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{weights_digest(model)[:24]}.parquet"
    known: dict[str, float] = {}
    if path.is_file():
        table = pd.read_parquet(path)
        known = dict(zip(table["key"], table["logp"]))
    added = 0
    for split, ds in splits.items():
        keys = {
            col: [sequence_key(p, r) for p, r in zip(ds["prompt_ids"], ds[f"{col}_ids"])] for col in ("chosen", "rejected")
        }
        missing = [i for i, (c, r) in enumerate(zip(keys["chosen"], keys["rejected"])) if c not in known or r not in known]
        if missing:
            values = compute_reference_logps(model, ds.select(missing), pad_id, batch_size, f"reference log-probs ({split})", collation)
            for j, i in enumerate(missing):
                known[keys["chosen"][i]], known[keys["rejected"][i]] = float(values[j, 0]), float(values[j, 1])
            added += len(missing)
        for col, name in zip(("chosen", "rejected"), COLUMNS):
            if name in ds.column_names:
                ds = ds.remove_columns(name)
            ds = ds.add_column(name, np.asarray([known[k] for k in keys[col]], dtype=np.float32).tolist())
        splits[split] = ds
    if added:
        # Atomic replace: concurrent sweep jobs never read half a file (a lost update is only recomputed).
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        pd.DataFrame({"key": list(known), "logp": list(known.values())}).to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return splits, {split: str(path) for split in splits}
