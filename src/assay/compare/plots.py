"""Plots for ``assay-compare``: each metric against a swept key, and learning curves per group."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from assay.compare.readers import Run
from assay.compare.table import value_label


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")


def _stamp(fig, footer: str) -> None:
    """The provenance line (commits, date) at the foot of a figure, so a plot pasted anywhere still
    names the code that produced it."""
    import warnings

    if footer:
        fig.text(0.01, 0.005, footer, fontsize=6, color="0.4", ha="left", va="bottom")
    with warnings.catch_warnings():  # a legend of many keys leaves no room to tighten: the figure is kept as laid out
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout(rect=(0, 0.03, 1, 1) if footer else (0, 0, 1, 1))


def plot_metrics(table: pd.DataFrame, by: list[str], metrics: list[str], x: str | None, out: Path, footer: str = "") -> list[Path]:
    """Each metric against the swept key ``x`` (one line per combination of the other keys, error
    bars = std over seeds); without a numeric key, one bar per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if x is None:
        numeric = [k for k in by if pd.to_numeric(table[k], errors="coerce").notna().all() and table[k].nunique() > 1]
        x = numeric[-1] if numeric else None
    for m in metrics:
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        if x is not None:
            others = [k for k in by if k != x]
            groups = table.groupby(others, sort=True) if others else [((), table)]
            for key, g in groups:
                g = g.assign(_x=pd.to_numeric(g[x])).sort_values("_x")
                key = key if isinstance(key, tuple) else (key,)
                label = ", ".join(f"{k}={v}" for k, v in zip(others, key)) or m
                ax.errorbar(g["_x"], g[f"{m} mean"], yerr=g[f"{m} std"].fillna(0), marker="o", capsize=3, label=label)
            xs = pd.to_numeric(table[x])
            if (xs > 0).all() and xs.max() / xs.min() >= 10:
                ax.set_xscale("log")  # learning rates, noise rates over decades
            ax.set_xlabel(x)
            name = f"{_slug(m)}_vs_{_slug(x)}.png"
        else:
            labels = [", ".join(f"{row[k]}" for k in by) or "all" for _, row in table.iterrows()]
            ax.bar(range(len(table)), table[f"{m} mean"], yerr=table[f"{m} std"].fillna(0), capsize=3, color="tab:blue")
            ax.set_xticks(range(len(table)), labels, rotation=30, ha="right")
            ax.set_xlabel(", ".join(by) or "runs")
            name = f"{_slug(m)}_by_group.png"
        ax.set_ylabel(m)
        ns = sorted(set(table[f"{m} n"]))
        ax.set_title(f"{m} (mean ± std over seeds, n={'/'.join(map(str, ns))})")
        ax.grid(alpha=0.3)
        if x is not None and len(ax.get_legend_handles_labels()[0]) > 1:
            ax.legend(fontsize=8)
        _stamp(fig, footer)
        fig.savefig(out / name)
        plt.close(fig)
        paths.append(out / name)
    return paths


def expand_curves(runs: list[Run], curves: list[str]) -> list[str]:
    """Curve names with shell wildcards (``mixing/weight/*``: an online mixer's weight of every
    domain) become every matching metrics.csv column of the runs, in sorted order."""
    import fnmatch

    columns = sorted({c for r in runs if r.history is not None for c in r.history.columns})
    out: list[str] = []
    for c in curves:
        matched = fnmatch.filter(columns, c) if any(ch in c for ch in "*?[") else [c]
        out.extend(m for m in matched if m not in out)
    return out


def plot_curves(runs: list[Run], by: list[str], curves: list[str], out: Path, footer: str = "") -> list[Path]:
    """Learning curves: per group, the mean over seeds at each step (band = ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for c in expand_curves(runs, curves):
        series: dict[str, list[pd.Series]] = {}
        for r in runs:
            h = r.history
            if h is None or c not in h or "step" not in h:
                continue
            s = h[["step", c]].dropna().groupby("step")[c].last()
            if len(s):
                label = ", ".join(f"{k}={value_label(r.config.get(k))}" for k in by) or "all runs"
                series.setdefault(label, []).append(s)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        for label, ss in sorted(series.items()):
            frame = pd.concat(ss, axis=1)
            mean, std = frame.mean(axis=1), frame.std(axis=1, ddof=1).fillna(0)
            line = ax.plot(mean.index, mean.values, marker="." if len(mean) < 30 else None, label=f"{label} (n={len(ss)})")[0]
            ax.fill_between(mean.index, (mean - std).values, (mean + std).values, alpha=0.2, color=line.get_color())
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(c)
        ax.set_title(f"{c} during training (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _stamp(fig, footer)
        name = f"curve_{_slug(c)}.png"
        fig.savefig(out / name)
        plt.close(fig)
        paths.append(out / name)
    return paths
