"""DoReMi's reference: an earlier run's per-example training losses, computed once and cached.

The reference model is an earlier assay run (its ``model/`` and ``tokenizer/``, as
``model.init_from`` reads them); DoReMi trains it on the reference weights α_ref first (Xie et al.
2023, §2, step 1). Its loss on every training example of this run is computed once before training,
with the reference's own tokenizer, and cached under ``$ASSAY_CACHE/reference_losses/`` keyed by a
hash of the reference weights, the objective and the examples' text, so every seed of a sweep
against the same reference reuses it and no reference model stays in memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from assay.errors import UserError


def check_reference_run(path: str, domains: list[str]) -> Path:
    """The reference run must be a finished run that reported a loss per domain, on these domains."""
    run = Path(path).expanduser()
    field = "mixture.reference"
    if not (run / "model" / "config.json").is_file() or not (run / "tokenizer").is_dir():
        raise UserError(field, path, "must be a finished assay run directory (with model/ and tokenizer/); train the reference first")
    summary_file = run / "summary.json"
    if not summary_file.is_file():
        raise UserError(field, path, "has no summary.json (the reference run did not finish)")
    summary = json.loads(summary_file.read_text())
    metrics = summary.get("metrics", {})
    theirs = sorted((summary.get("data", {}) or {}).get("source_counts", {}) or {})
    per_domain = {k.rsplit("/", 1)[1] for k in metrics if k.startswith(("val/loss/", "test/loss/"))}
    if not per_domain:
        raise UserError(field, path, "reports no per-domain losses (val/loss/<domain>); rerun it with eval.per_source_metrics including loss")
    if theirs and sorted(theirs) != sorted(domains):
        raise UserError(field, path, f"was trained on domains {theirs}, this run has {sorted(domains)}; DoReMi needs a reference on the same domains")
    missing = sorted(set(domains) - per_domain)
    if missing:
        raise UserError(field, path, f"reports no loss for domain(s) {missing} (it has {sorted(per_domain)})")
    return run


def _digest(model: torch.nn.Module, objective, texts: list[str]) -> str:
    from assay.objectives.reference import weights_digest

    h = hashlib.sha256(weights_digest(model).encode())
    h.update(repr(objective).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


@torch.no_grad()
def reference_losses(run: Path, train: datasets.Dataset, objective, data, cache_dir: Path, device: str = "cpu") -> dict[str, float]:
    """Per-example loss of the reference model on ``train`` (raw examples), keyed by id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assay.data.collate import Collator, tokenize_split
    from assay.data.datamodule import Rows

    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(run / "model").to(device).eval()
    columns = data.text_columns
    texts = ["\x1f".join(str(r[c]) for c in ("id", *columns)) for r in train.select_columns(["id", *columns])]
    cache = Path(cache_dir) / "reference_losses" / f"{_digest(model, objective, texts)}.parquet"
    if cache.is_file():
        table = pd.read_parquet(cache)
        return dict(zip(table["id"].astype(str), table["loss"].astype(float)))
    tokenized = tokenize_split(train, tokenizer, data.format, data.separator, data.max_length)
    tokenized = tokenized.add_column("_row", list(range(len(tokenized))))
    loader = DataLoader(Rows(tokenized), batch_size=data.eval_batch_size, collate_fn=Collator(tokenizer.pad_token_id, data.format, with_generation=False, **objective.collation))
    ids, losses = [], []
    for batch in loader:
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        out = objective.compute(model, batch, training=False)
        ids.extend(batch["ids"])
        losses.extend(out.loss.float().cpu().tolist())
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    pd.DataFrame({"id": ids, "loss": np.asarray(losses, dtype=np.float64)}).to_parquet(tmp, index=False)
    tmp.rename(cache)
    return dict(zip(ids, losses))
