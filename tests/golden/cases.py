"""Golden values: per-step training losses and selection outcomes on the embedded default.

A regression net for refactors: these numbers must not move unless a change means to move them.
``python -m tests.golden.record`` rewrites ``values.json`` from the cases below (run it only for a
change that is meant to alter the numbers, and say so in the commit).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from tests.conftest import USER_MODEL_CACHE

VALUES = Path(__file__).with_name("values.json")
FAST = ["debug=fast", "trainer.enable_progress_bar=false"]
SELECT_ONLY = [*FAST, "trainer.max_steps=1", "eval.val_generate=false"]
UNTRAINED = ["selection.allow_untrained=true"]
# The OT scorers embed with all-MiniLM-L6-v2 from the user's model cache (`assay-fetch minilm`, run by `make test`).
MINILM = [f"selection.embedder_options.path={USER_MODEL_CACHE / 'all-MiniLM-L6-v2'}"]

TRAINING = {
    "sft": [],
    "dpo": ["objective=dpo", "data.format=preference"],
    "dr_dpo": ["objective=dr_dpo", "data.format=preference", "objective.aggregator.beta_prime=0.5"],
    "beta_dpo": ["objective=beta_dpo", "data.format=preference"],
    "ipo_random_half": ["objective=ipo", "data.format=preference", "selection=random", "selection.selector.fraction=0.5"],
}
"""Runs whose per-step train loss and final test loss are recorded."""

SELECTION = {
    "el2n_top": ["selection=el2n", "selection.selector.fraction=0.5", *UNTRAINED],
    "el2n_anchor_quantile": ["selection=el2n", "selection/selector=anchor_quantile", "selection.selector.quantile=0.3", *UNTRAINED],
    "perplexity_quota": ["selection=perplexity", "selection/selector=quota", "selection.selector.quotas={copy:0.9,add:0.1}", "selection.selector.fraction=0.5", *UNTRAINED],
    "perplexity_threshold": ["selection=perplexity", "selection/selector=threshold", "selection.selector.threshold=-4.43", *UNTRAINED],
    "grand_cluster_quota": ["selection=grand", "selection/selector=quota", "selection.selector.by=cluster", "selection.selector.clusters=3", "selection.selector.fraction=0.4", *UNTRAINED],
    "lava": ["selection=lava", "selection.selector.fraction=0.5", *MINILM],
    "gotd": ["selection=gotd", "selection.selector.fraction=0.5", *MINILM],
    "kmeans_diverse": ["selection=kmeans_diverse", "selection.selector.fraction=0.5"],
    "embed_sim": ["selection=embed_sim", "selection.selector.fraction=0.5"],
    "random_count_preference": ["objective=dpo", "data.format=preference", "selection=random", "selection.selector.count=50"],
}
"""Selections whose scores and kept ids are recorded (one optimizer step after selecting)."""


def training_values(run_dir: Path, summary: dict) -> dict:
    metrics = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["train/loss"])
    return {"step": metrics["step"].astype(int).tolist(), "train_loss": metrics["train/loss"].tolist(), "test_loss": summary["metrics"]["test/loss"]}


def selection_values(run_dir: Path) -> dict:
    sel = pd.read_parquet(run_dir / "selection.parquet")
    kept = sorted(sel.loc[sel["kept"], "id"])
    return {
        "pool": len(sel),
        "kept": len(kept),
        "score_abs_sum": float(sel["score"].abs().sum()),
        "kept_ids_sha1": hashlib.sha1("\n".join(kept).encode()).hexdigest(),
    }
