"""Table, paired tests and plots of the noisy-preferences v2 grid (run.sh runs it at the end).

    python analyze.py <grid directory> <output directory>

Reads every ``runs/seed=<s>/p=<p>/<method>/summary.json`` (and the run's metrics.csv and mechanism.csv),
writes runs.csv (one row per run), table.md (mean ± sample std over seeds), paired.md (each method
against DPO at each flip rate, paired by seed: the same SFT model, flips and data order) and the plots.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ttest_rel

COLUMNS = {
    "test/pref_acc": "pref acc",
    "test/answer_reward": "answer reward",
    "test/win_rate": "win rate",
    "test/kl_ref": "KL ref",
    "test/exact_match": "exact match",
    "mechanism/auroc_loss": "AUROC loss",
    "mechanism/auroc_dr_weight": "AUROC Dr. weight",
    "mechanism/flipped_share_lowest_weight": "flipped share, lowest 10% weight",
    "mechanism/auroc_beta_dpo_keep": "AUROC β-DPO drop",
    "mechanism/beta_first": "β first",
    "mechanism/beta_last": "β last",
    "fit_flipped_last_epoch": "flipped pairs fit, last epoch",
    "fit_clean_last_epoch": "clean train pairs fit, last epoch",
}
PAIRED = ("test/pref_acc", "test/answer_reward", "test/win_rate", "test/kl_ref")


def flip_fit(run: Path) -> pd.DataFrame:
    """Per epoch, the share of flipped and of clean training pairs whose *training* label the model's
    implicit reward agrees with (per-pair ``pref_acc`` in the store, recorded on the step's batch before
    its update): how far the run has fit the flipped labels."""
    from assay.dynamics.store import read_store

    if not any((run / "dynamics").glob("part-*.parquet")):
        return pd.DataFrame()
    store = read_store(run / "dynamics")
    if "is_flipped" not in store:
        return pd.DataFrame()
    return store.groupby(["epoch", "is_flipped"])["pref_acc"].mean().unstack()


def mechanism(run: Path) -> dict:
    from assay.dynamics.mechanism import mechanism_summary
    from assay.dynamics.store import read_store

    if not any((run / "dynamics").glob("part-*.parquet")):
        return {}
    return mechanism_summary(read_store(run / "dynamics"))[0]


def load(grid: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(grid.glob("runs/seed=*/p=*/*/summary.json")):
        metrics = json.loads(path.read_text())["metrics"]
        run = path.parent
        # the mechanism columns are recomputed from the run's store with the current
        # assay.dynamics.mechanism (the grid's runs recorded β-DPO's trajectory as the fixed β_0)
        mech = mechanism(run)
        if mech:
            metrics.update(mech)
        fit = flip_fit(run)
        metrics["fit_flipped_last_epoch"] = float(fit[True].dropna().iloc[-1]) if True in fit else np.nan
        metrics["fit_clean_last_epoch"] = float(fit[False].dropna().iloc[-1]) if False in fit else np.nan
        rows.append({"seed": int(run.parent.parent.name.split("=")[1]), "p": float(run.parent.name.split("=")[1]), "method": run.name,
                     "run_dir": str(run), **{k: metrics.get(k, np.nan) for k in COLUMNS}})
    return pd.DataFrame(rows)


def order(methods) -> list[str]:
    preferred = ["dpo", "cdpo", "rdpo", "ipo", "dr_dpo_bp0.5", "dr_dpo_bp1", "dr_dpo_bp2", "beta_dpo", "dr_beta_dpo"]
    return [m for m in preferred if m in set(methods)] + sorted(set(methods) - set(preferred))


def fmt(values: pd.Series, digits: int = 3) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


METRICS = ["test/pref_acc", "test/answer_reward", "test/win_rate", "test/kl_ref", "test/exact_match"]


def table(runs: pd.DataFrame, keys=None) -> str:
    keys = list(COLUMNS) if keys is None else keys
    head = ["method", "p", "n"] + [COLUMNS[k] for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in order(runs["method"]):
        for p, cell in runs[runs["method"] == method].groupby("p"):
            lines.append("| " + " | ".join([method, f"{p:g}", str(len(cell))] + [fmt(cell[k]) for k in keys]) + " |")
    return "\n".join(lines)


def paired(runs: pd.DataFrame) -> str:
    """Method − DPO per seed, mean difference and the two-sided paired t-test's p-value."""
    head = ["method", "p"] + [f"Δ {COLUMNS[k]} (p-value)" for k in PAIRED]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in order(runs["method"]):
        if method == "dpo":
            continue
        for p in sorted(runs["p"].unique()):
            base = runs[(runs["method"] == "dpo") & (runs["p"] == p)].set_index("seed")
            other = runs[(runs["method"] == method) & (runs["p"] == p)].set_index("seed")
            seeds = base.index.intersection(other.index)
            cells = []
            for k in PAIRED:
                a, b = other.loc[seeds, k].to_numpy(float), base.loc[seeds, k].to_numpy(float)
                if len(seeds) < 2:
                    cells.append("–")
                    continue
                d = a - b
                pv = ttest_rel(a, b).pvalue if np.any(d != 0) else 1.0
                cells.append(f"{d.mean():+.3f} ({pv:.3f}, n={len(seeds)})")
            lines.append("| " + " | ".join([method, f"{p:g}"] + cells) + " |")
    return "\n".join(lines)


def plots(runs: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = order(runs["method"])
    for key in ("test/pref_acc", "test/win_rate", "test/answer_reward", "test/kl_ref"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in methods:
            g = runs[runs["method"] == m].groupby("p")[key]
            ax.errorbar(g.mean().index, g.mean().values, yerr=g.std(ddof=1).fillna(0).values, label=m, marker="o", capsize=3)
        ax.set_xlabel("flip rate p (uniform)")
        ax.set_ylabel(key)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{key.replace('/', '_')}_vs_p.png", dpi=110)
        plt.close(fig)

    # learning curves: train loss (on the noisy labels) and clean val preference accuracy, mean over seeds
    for p in sorted(runs["p"].unique()):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for m in methods:
            curves = []
            for run_dir in runs[(runs["method"] == m) & (runs["p"] == p)]["run_dir"]:
                path = Path(run_dir) / "metrics.csv"
                if path.exists():
                    curves.append(pd.read_csv(path))
            if not curves:
                continue
            allc = pd.concat(curves)
            for ax, key in zip(axes, ("train/pref_acc", "val/pref_acc")):
                if key in allc:
                    c = allc.dropna(subset=[key]).groupby("step")[key].mean()
                    ax.plot(c.index + 1, c.values, label=m, marker="." if key.startswith("val") else None)
        axes[0].set_title(f"train/pref_acc on the (noisy) training labels, p={p:g}")
        axes[1].set_title(f"val/pref_acc on clean held-out pairs, p={p:g}")
        for ax in axes:
            ax.set_xlabel("step")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"learning_curves_p{p:g}.png", dpi=110)
        plt.close(fig)

    # how fast each method fits the flipped labels, per epoch (mean over seeds)
    noisy = sorted(x for x in runs["p"].unique() if x > 0)
    if noisy:
        fig, axes = plt.subplots(1, len(noisy), figsize=(5.5 * len(noisy), 4), squeeze=False)
        for ax, p in zip(axes[0], noisy):
            for m in methods:
                fits = [flip_fit(Path(r)) for r in runs[(runs["method"] == m) & (runs["p"] == p)]["run_dir"]]
                fits = [f[True] for f in fits if True in f]
                if fits:
                    c = pd.concat(fits, axis=1).mean(axis=1)
                    ax.plot(c.index + 1, c.values, label=m, marker=".")
            ax.set_title(f"flipped training pairs fit (model agrees with the flipped label), p={p:g}", fontsize=8)
            ax.set_xlabel("epoch")
            ax.set_ylim(0, 1)
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "flipped_fit_by_epoch.png", dpi=110)
        plt.close(fig)

    # mechanism: Dr. DPO weight AUROC and the flipped share among the lowest-weight pairs, per step
    dr = [m for m in methods if m.startswith("dr_")] + ["dpo"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in dr:
        for p in sorted(x for x in runs["p"].unique() if x > 0):
            steps = []
            for run_dir in runs[(runs["method"] == m) & (runs["p"] == p)]["run_dir"]:
                path = Path(run_dir) / "mechanism.csv"
                if path.exists():
                    steps.append(pd.read_csv(path))
            if not steps:
                continue
            s = pd.concat(steps).groupby("step").mean(numeric_only=True)
            column = "auroc_dr_weight" if "auroc_dr_weight" in s else "auroc_loss"
            axes[0].plot(s.index, s[column].rolling(5, min_periods=1).mean(), label=f"{m} p={p:g} ({column})")
            if "flipped_share_lowest_weight" in s:
                axes[1].plot(s.index, s["flipped_share_lowest_weight"].rolling(5, min_periods=1).mean(), label=f"{m} p={p:g}")
                axes[1].axhline(p, color="grey", lw=0.5, ls="--")
    axes[0].axhline(0.5, color="grey", lw=0.5, ls="--")
    axes[0].set_title("within-batch AUROC for flipped pairs (5-step mean)")
    axes[1].set_title("flipped share among the 10% lowest-weight pairs")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "mechanism_dr_dpo.png", dpi=110)
    plt.close(fig)


def main() -> None:
    grid, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    runs = load(grid)
    runs.to_csv(out / "runs.csv", index=False)
    (out / "table.md").write_text(table(runs) + "\n")
    (out / "table_metrics.md").write_text(table(runs, METRICS) + "\n")
    noisy = runs[runs["p"] > 0]
    (out / "table_mechanism.md").write_text(table(noisy, [k for k in COLUMNS if k not in METRICS]) + "\n")
    (out / "paired.md").write_text(paired(runs) + "\n")
    plots(runs, out)
    print(table(runs))
    print()
    print(paired(runs))


if __name__ == "__main__":
    main()
