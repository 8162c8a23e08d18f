"""Fit regressors and report how far to trust them: held-out Spearman and R², fit time, a plot."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from assay.mixsearch.regressors import check_rows, make_regressor
from assay.mixsearch.table import Table

HOLDOUT_ABOVE = 200
"""Swarms larger than this are scored on one held-out fifth; smaller ones by k-fold."""


@dataclass
class FitScore:
    name: str
    spearman: float
    r2: float
    mae: float
    fit_s: float
    scheme: str
    params: dict = field(default_factory=dict)
    y_true: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y_pred: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fold_spearman: list = field(default_factory=list)
    """The held-out Spearman of every fold on its own (one entry under a single held-out split)."""

    def fold_spread(self) -> str:
        folds = [r for r in self.fold_spearman if r == r]
        return f"{np.mean(folds):.3f} ± {np.std(folds, ddof=1):.3f} ({len(folds)} folds)" if len(folds) > 1 else "—"


@dataclass
class FitReport:
    target: str
    n: int
    m: int
    scores: list[FitScore]

    def markdown(self) -> str:
        lines = [
            f"target `{self.target}`, {self.n} proxies, {self.m} domains",
            "",
            "| regressor | held-out Spearman | per fold (mean ± sd) | held-out R² | MAE | scheme | fit time (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in self.scores:
            lines.append(f"| {s.name} | {s.spearman:.3f} | {s.fold_spread()} | {s.r2:.3f} | {s.mae:.4f} | {s.scheme} | {s.fit_s:.2f} |")
        return "\n".join(lines)


def heldout_predictions(name: str, table: Table, folds: Optional[int] = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str, list[float]]:
    """Out-of-fold predictions and each fold's own Spearman: k-fold for small swarms, one held-out
    fifth for large ones; ``folds`` given, k folds at any size (the spread of the Spearman over folds)."""
    from sklearn.model_selection import KFold

    n, m = len(table.y), len(table.domains)
    model = make_regressor(name, seed, table)
    idx = np.arange(n)
    if folds is None and n > HOLDOUT_ABOVE:
        rng = np.random.default_rng(seed)
        test = rng.permutation(n)[: n // 5]
        splits, scheme = [(np.setdiff1d(idx, test), test)], "20% held out"
    else:
        k = min(folds or 5, n)
        while k > 2 and n - int(np.ceil(n / k)) < model.min_rows(m):
            k += 1  # smaller test folds leave more proxies to fit on
            if k >= n:
                k = n
                break
        splits, scheme = list(KFold(k, shuffle=True, random_state=seed).split(idx)), f"{k}-fold"
    pred = np.full(n, np.nan)
    per_fold = []
    for train, test in splits:
        check_rows(model, n, m, held_out=len(test))
        sub = make_regressor(name, seed, table).fit(table.X[train], table.y[train], None if table.scale is None else table.scale[train])
        pred[test] = sub.predict(table.X[test], None if table.scale is None else table.scale[test])
        ok = test[~np.isnan(pred[test])]
        per_fold.append(score(table.y[ok], pred[ok])[0] if len(ok) > 2 else float("nan"))
    mask = ~np.isnan(pred)
    return table.y[mask], pred[mask], scheme, per_fold


def score(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import spearmanr
    from sklearn.metrics import r2_score

    rho = float(spearmanr(y, p).statistic) if np.ptp(y) > 0 and np.ptp(p) > 0 else float("nan")
    return rho, float(r2_score(y, p)), float(np.mean(np.abs(y - p)))


def fit_report(table: Table, names: list[str], out: Optional[Path] = None, folds: Optional[int] = None, seed: int = 0, echo: Callable[[str], None] = print) -> FitReport:
    m = len(table.domains)
    for name in names:  # fail before any fit when the swarm is too small for one of them
        check_rows(make_regressor(name, seed, table), len(table.y), m, held_out=1)
    scores = []
    for name in names:
        start = time.perf_counter()
        full = make_regressor(name, seed, table).fit(table.X, table.y, table.scale)
        fit_s = time.perf_counter() - start
        y, p, scheme, per_fold = heldout_predictions(name, table, folds, seed)
        rho, r2, mae = score(y, p)
        scores.append(FitScore(name, rho, r2, mae, fit_s, scheme, full.params(), y, p, per_fold))
        spread = scores[-1].fold_spread()
        echo(f"[assay-mix] {name}: held-out Spearman {rho:.3f}" + ("" if spread == "—" else f" (per fold {spread})") + f", R² {r2:.3f} ({scheme}); fit {fit_s:.2f}s")
    report = FitReport(table.target_name, len(table.y), m, scores)
    if out is not None:
        write_report(report, table, out)
    return report


def write_report(report: FitReport, table: Table, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "fit.md").write_text(report.markdown() + "\n")
    rows = ["regressor,spearman,spearman_fold_mean,spearman_fold_sd,r2,mae,scheme,fit_s"] + [
        f"{s.name},{s.spearman:.4f},{np.nanmean(s.fold_spearman) if s.fold_spearman else float('nan'):.4f},"
        f"{np.nanstd(s.fold_spearman, ddof=1) if len(s.fold_spearman) > 1 else float('nan'):.4f},{s.r2:.4f},{s.mae:.5f},{s.scheme},{s.fit_s:.3f}"
        for s in report.scores]
    (out / "fit.csv").write_text("\n".join(rows) + "\n")
    (out / "params.json").write_text(json.dumps({s.name: s.params for s in report.scores}, indent=2, default=float))
    table.to_frame().to_csv(out / "table.csv", index=False)
    plot_pred_vs_true(report, out / "pred_vs_true.png")


def plot_pred_vs_true(report: FitReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(report.scores)
    cols = min(3, k)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax, s in zip(axes.flat, report.scores):
        ax.scatter(s.y_true, s.y_pred, s=10, alpha=0.7)
        lo, hi = float(min(s.y_true.min(), s.y_pred.min())), float(max(s.y_true.max(), s.y_pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{s.name}: ρ={s.spearman:.2f}, R²={s.r2:.2f}", fontsize=9)
        ax.set_xlabel(f"true {report.target}", fontsize=8)
        ax.set_ylabel("predicted (held out)", fontsize=8)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
