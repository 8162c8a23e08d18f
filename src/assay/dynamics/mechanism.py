"""What a noise-robust preference objective did, read from the per-sample store of its run.

Dr. DPO (Wu et al. 2024) claims its soft-min weights w_i = softmax(−ℓ_i/β′) push flipped pairs down;
β-DPO (Wu et al. 2024) claims its margin-guided filter drops uninformative or wrong pairs and that its
batch β tracks data quality; plain DPO's per-pair loss is itself a detector of flipped pairs (noisy
pairs are hard to fit). Whether that happens in a given run is a measurable fact whenever the store
carries the ground-truth ``is_flipped`` flag. Every detector is read so that a high value flags a pair:

    loss           the per-pair loss                      (flipped pairs fit badly)
    dr_weight      −w_i, Dr. DPO's aggregation weight      (flipped pairs get little weight)
    beta_dpo_keep  1 − kept, β-DPO's keep mask             (flipped pairs are filtered out)

AUROC is computed within each step's batch (a weight is only comparable inside its softmax) and
averaged over the steps where the batch holds both flipped and clean pairs, overall and for the first
and last third of training. The step-wise table also has the β the loss used (β-DPO's batch β) and the share of flipped pairs
among the lowest-weight ``low_share`` of each batch against the batch's flip rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

# detector name -> (store column it reads, the column turned into "higher flags a flipped pair")
DETECTORS = {
    "loss": ("loss", lambda column: column),
    "dr_weight": ("dr_weight", lambda column: -column),
    "beta_dpo_keep": ("kept", lambda column: 1.0 - column.astype(float)),
}


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """P(score of a flipped pair > score of a clean pair), ties half: the Mann-Whitney U over n⁺n⁻."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float(mannwhitneyu(score[positive], score[~positive]).statistic / (n_pos * n_neg))


def mechanism_steps(store: pd.DataFrame, low_share: float = 0.1) -> pd.DataFrame:
    """One row per training step: each detector's within-batch AUROC against ``is_flipped``, the flip
    rate, β-DPO's mean β, and the flipped share among the ``low_share`` lowest-weight pairs."""
    rows = []
    for step, batch in store.groupby("step", sort=True):
        flipped = batch["is_flipped"].to_numpy(dtype=bool)
        row = {"step": int(step), "flip_rate": float(flipped.mean())}
        for name, (column, flags) in DETECTORS.items():
            if column in batch:
                row[f"auroc_{name}"] = auroc(flipped, flags(batch[column]).to_numpy(dtype=np.float64))
        if "dr_weight" in batch:
            k = max(1, int(round(low_share * len(batch))))
            lowest = np.argsort(batch["dr_weight"].to_numpy(), kind="stable")[:k]
            row["flipped_share_lowest_weight"] = float(flipped[lowest].mean())
        # β-DPO's batch β is ``beta_dpo_beta``; ``beta`` is the fixed β_0 every DPO-family record carries
        beta = "beta_dpo_beta" if "beta_dpo_beta" in batch else "beta"
        if beta in batch:
            row["beta"] = float(batch[beta].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def mechanism_summary(store: pd.DataFrame, low_share: float = 0.1) -> tuple[dict[str, float], pd.DataFrame]:
    """(``mechanism/*`` scalars for summary.json, the step-wise table). Empty where the store has no
    ground-truth flips (or no flipped pair at all)."""
    if store.empty or "is_flipped" not in store or not store["is_flipped"].any():
        return {}, pd.DataFrame()
    steps = mechanism_steps(store, low_share)
    out: dict[str, float] = {"mechanism/flip_rate": float(store["is_flipped"].mean())}
    third = max(1, len(steps) // 3)
    first, last = steps.iloc[:third], steps.iloc[-third:]
    for column in [c for c in steps.columns if c.startswith("auroc_") or c == "flipped_share_lowest_weight"]:
        out[f"mechanism/{column}"] = float(steps[column].mean())
        out[f"mechanism/{column}_first_third"] = float(first[column].mean())
        out[f"mechanism/{column}_last_third"] = float(last[column].mean())
    if "beta" in steps:
        out["mechanism/beta_first"] = float(steps["beta"].iloc[0])
        out["mechanism/beta_last"] = float(steps["beta"].iloc[-1])
    return out, steps


def write_mechanism(run_dir) -> dict[str, float]:
    """Summarise a finished run's per-pair store (``mechanism/*`` scalars) and write the step-wise table
    to ``<run_dir>/mechanism.csv``; nothing where the run recorded no flipped pairs."""
    from pathlib import Path

    from assay.dynamics.store import read_store

    store_dir = Path(run_dir) / "dynamics"
    if not any(store_dir.glob("part-*.parquet")):
        return {}
    summary, steps = mechanism_summary(read_store(store_dir))
    if summary:
        steps.to_csv(Path(run_dir) / "mechanism.csv", index=False)
    return summary
