"""The selection-detection table: one row per scorer, detection and downstream accuracy side by side
for both corruption rates, from the run directories that experiments/selection_detection/run.sh wrote.

    python experiments/selection_detection/table.py logs/selection_detection --out experiments/selection_detection/results

Reads every ``<root>/<scorer>/p<rate>`` sweep through assay-compare's reader (a job that failed or
never started is listed, not dropped), aggregates over seeds (mean ± sample std), and writes
``table.md`` (the README table), ``runs.csv`` (one row per job), ``kept_by_skill.csv`` (share of
each skill kept, mean over seeds) and ``detection.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from assay.compare import aggregate, collect, runs_frame

AUROC, PRECISION, EXACT = "selection/is_corrupted/auroc", "selection/is_corrupted/precision_at_k", "test/exact_match"
METRICS = [AUROC, PRECISION, EXACT]
BY = ["selection.name", "noise.p"]
BASELINES = {"none": "everything (no selection)", "random": "random subset, same size"}
SCORERS = ("perplexity", "ifd", "el2n", "grand", "cartography", "forgetting", "clues", "less", "lqs", "embed_sim", "kmeans_diverse",
           "lava", "gotd", "forward_inf")
"""Every scorer run.sh runs: one without runs still gets its row (``not run``)."""


def cell(row: pd.Series, metric: str) -> str:
    n = int(row[f"{metric} n"])
    if n == 0:
        return "—"
    return f"{row[f'{metric} mean']:.3f} ± {row[f'{metric} std']:.3f}" if n > 1 else f"{row[f'{metric} mean']:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    sweeps = sorted(str(d) for d in args.root.glob("*/p*") if d.is_dir() and d.parent.name != "probes")
    runs = collect(sweeps)
    table = aggregate(runs, BY, METRICS)
    args.out.mkdir(parents=True, exist_ok=True)
    runs_frame(runs, BY, METRICS).to_csv(args.out / "runs.csv", index=False)
    kept_by_skill(args.root).to_csv(args.out / "kept_by_skill.csv")

    rates = sorted({str(r) for r in table["noise.p"]})
    order = list(BASELINES) + sorted((set(table["selection.name"].unique()) | set(SCORERS)) - set(BASELINES))
    head = ["scorer"] + [f"AUROC p={r}" for r in rates] + [f"P@k p={r}" for r in rates] + [f"exact match p={r}" for r in rates] + ["runs"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for scorer in order:
        rows = {str(r["noise.p"]): r for _, r in table[table["selection.name"] == scorer].iterrows()}
        cells = [BASELINES.get(scorer, scorer)]
        for metric in METRICS:
            if scorer == "none" and metric != EXACT:
                cells += ["—"] * len(rates)  # keeps everything: no ranking to read as a detector
                continue
            cells += [cell(rows[r], metric) if r in rows else "not run" for r in rates]
        cells.append(" / ".join(f"{int(rows[r]['n'])}" + (f" (+{int(rows[r]['failed'])} failed)" if rows[r]["failed"] else "") if r in rows else "0" for r in rates))
        lines.append("| " + " | ".join(cells) + " |")
    bad = [r for r in runs if r.status != "completed"]
    text = "\n".join(lines) + "\n"
    if bad:
        text += "\nJobs without a result:\n\n" + "\n".join(f"- `{r.name}`: {r.status} ({r.reason})" for r in bad) + "\n"
    (args.out / "table.md").write_text(text)
    print(text)
    plot(table, rates, args.out / "detection.png")


def kept_by_skill(root: Path) -> pd.DataFrame:
    """Share of each skill's pool examples a selection kept (mean over seeds): where a scorer's budget
    goes, which detection AUROC does not show. Skills are the first part of the skills corpus's ids."""
    rows = []
    for path in sorted(root.glob("*/p*/*/selection.parquet")):
        sel = pd.read_parquet(path)
        share = sel.groupby(sel["id"].str.split("/").str[0])["kept"].mean()
        rows.append({"scorer": path.parts[-4], "p": path.parts[-3][1:], **share.to_dict()})
    return pd.DataFrame(rows).groupby(["scorer", "p"]).mean().round(3)


def plot(table: pd.DataFrame, rates: list[str], path: Path) -> None:
    """Detection AUROC (x) against downstream exact match (y), one point per scorer and rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rates), figsize=(6 * len(rates), 4.5), squeeze=False)
    for ax, rate in zip(axes[0], rates):
        sub = table[table["noise.p"].astype(str) == rate]
        for _, row in sub.iterrows():
            y, yerr = row[f"{EXACT} mean"], row[f"{EXACT} std"]
            if row["selection.name"] in BASELINES:
                ax.axhline(y, ls="--", lw=1, color="gray")
                ax.annotate(BASELINES[row["selection.name"]], (0.0, y), xycoords=("axes fraction", "data"), fontsize=7, color="gray", va="bottom")
                continue
            x, xerr = row[f"{AUROC} mean"], row[f"{AUROC} std"]
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", ms=4, capsize=2)
            ax.annotate(row["selection.name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axvline(0.5, ls=":", lw=1, color="gray")
        ax.set(title=f"{float(rate):.0%} of completions corrupted", xlabel="detection AUROC (is_corrupted)", ylabel="test exact match")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
