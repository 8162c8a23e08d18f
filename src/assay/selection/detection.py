"""Selection as noise detection: every selection is scored against the ground-truth noise flags the
noise transforms leave in the training split (the protocol of LAVA / OpenDataVal / dattri)."""

from __future__ import annotations

import numpy as np

from assay.data.noise import FLAGS
from assay.lazy import datasets, pd
from assay.selection.selectors import finite



def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann-Whitney U; ties count half)."""
    positive = np.asarray(positive, dtype=bool)
    ranks = pd.Series(np.asarray(score, dtype=np.float64)).rank(method="average").to_numpy()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_report(train: datasets.Dataset, scores: np.ndarray, kept: np.ndarray) -> dict:
    """Each ground-truth flag present in ``train`` against the keep-scores, read as a detector where a
    low keep-score flags the noisy example: AUROC, precision@k with k = number of flagged examples,
    and the flagged share before / after."""
    report = {}
    scores = finite(scores)
    for flag in FLAGS:
        if flag not in train.column_names:
            continue
        noisy = np.asarray(train[flag], dtype=bool)
        k = int(noisy.sum())
        if k == 0 or k == len(noisy):
            continue
        lowest = np.lexsort((np.arange(len(scores)), scores))[:k]
        report[flag] = {
            "auroc": auroc(noisy, -scores),
            "precision_at_k": float(noisy[lowest].mean()),
            "k": k,
            "pool_rate": float(noisy.mean()),
            "kept_rate": float(noisy[kept].mean()) if kept.any() else float("nan"),
        }
    return report


METRICS = ("auroc", "precision_at_k", "kept_rate")


def detection_metrics(metadata: dict) -> dict[str, float]:
    """A selection's detection report as flat metrics (``selection/is_corrupted/auroc``,
    ``…/precision_at_k``, ``…/kept_rate``), so sweeps compare them like any other metric."""
    return {f"selection/{flag}/{key}": float(report[key]) for flag, report in metadata.get("detection", {}).items() for key in METRICS}
