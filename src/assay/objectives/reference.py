"""Reference log-probs, computed once before training and cached on disk.

The cache key is a hash of exactly what determines the numbers: the reference weights, and the
token ids of every (id, prompt, chosen, rejected) row. Later runs and every job of a sweep that
share them reuse the file; no reference model stays in memory during training.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from assay.data.collate import Collator
from assay.data.datamodule import Rows
from assay.objectives.logps import sequence_logps

COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def rows_digest(ds: datasets.Dataset) -> str:
    h = hashlib.sha256()
    for row_id, p, c, r in zip(ds["id"], ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"]):
        h.update(f"{row_id}|{p}|{c}|{r}\n".encode())
    return h.hexdigest()


@torch.no_grad()
def compute_reference_logps(model: torch.nn.Module, ds: datasets.Dataset, pad_id: int, batch_size: int, desc: str) -> np.ndarray:
    """[N, 2] summed log-probs of (chosen, rejected) under ``model``."""
    was_training = model.training
    model.eval()
    loader = DataLoader(Rows(ds), batch_size=batch_size, collate_fn=Collator(pad_id, "preference", with_generation=False))
    out = []
    for batch in tqdm(loader, desc=desc, leave=False):
        lp = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"]).sum
        out.append(torch.stack(lp.chunk(2), dim=1).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def attach_reference_logps(
    model: torch.nn.Module, splits: datasets.DatasetDict, pad_id: int, batch_size: int, cache_dir: Path
) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """Add ``ref_chosen_logps`` / ``ref_rejected_logps`` to every split; returns the cache files used."""
    weights = weights_digest(model)
    cache_dir.mkdir(parents=True, exist_ok=True)
    used = {}
    for split, ds in splits.items():
        key = hashlib.sha256(f"{weights}|{rows_digest(ds)}".encode()).hexdigest()[:24]
        path = cache_dir / f"{key}.parquet"
        if path.is_file():
            table = pd.read_parquet(path)
        else:
            values = compute_reference_logps(model, ds, pad_id, batch_size, desc=f"reference log-probs ({split})")
            table = pd.DataFrame({"id": ds["id"], COLUMNS[0]: values[:, 0], COLUMNS[1]: values[:, 1]})
            tmp = path.with_suffix(".tmp")
            table.to_parquet(tmp, index=False)
            tmp.rename(path)
        table = table.set_index("id").loc[ds["id"]]
        for col in COLUMNS:
            if col in ds.column_names:
                ds = ds.remove_columns(col)
            ds = ds.add_column(col, table[col].astype("float32").tolist())
        splits[split] = ds
        used[split] = str(path)
    return splits, used
