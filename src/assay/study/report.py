"""``assay-study report``: ``runs.csv`` (one row per run), ``results.md`` and the plots of a study.

The headline holds exactly the declared family (``comparisons`` and ``one_sample`` of study.yaml),
each within every level of the crossed factors: paired differences over seeds with a 95 % bootstrap
CI, the paired t-test, the family-corrected p (Holm unless the spec says bh) and the minimum
detectable effect at the seeds run (``assay.compare.stats``). The same pairs on the secondary metrics
follow under "Exploratory", never in the headline. ``runs.csv`` and ``results.md`` are what a study
commits: every number in ``results.md`` can be recomputed from ``runs.csv``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import pandas as pd

from assay.compare.readers import Run, read_local_run
from assay.compare.stats import Comparison, adjust, markdown, one_sample, paired_comparison
from assay.compare.table import provenance_footer
from assay.errors import UserError
from assay.study.runner import states
from assay.study.spec import Cell, StudySpec

RUNS_FILE, RESULTS_FILE = "runs.csv", "results.md"


def collect(spec: StudySpec) -> tuple[pd.DataFrame, list[Run]]:
    """One row per (cell, seed) of the spec, completed or not (a missing seed is part of the result)."""
    rows, runs = [], []
    for st in states(spec):
        if st.cell is None:
            continue
        row = {"arm": st.cell.arm, **dict(st.cell.level), "seed": st.seed, "status": st.status, "commit": st.commit or "",
               "run_dir": str(st.dir.relative_to(spec.root))}
        if st.status == "completed":
            run = read_local_run(st.dir)
            row.update(run.metrics)
            runs.append(run)
        rows.append(row)
    frame = pd.DataFrame(rows)
    fixed = ["arm", *spec.cross, "seed", "status", "commit", "run_dir"]
    return frame[fixed + sorted(c for c in frame.columns if c not in fixed)], runs


def _values(frame: pd.DataFrame, cell: Cell, metric: str) -> dict[int, float]:
    mask = (frame["arm"] == cell.arm) & (frame["status"] == "completed")
    for k, v in cell.level:
        mask &= frame[k].astype(str) == v
    if metric not in frame:
        return {}
    part = frame.loc[mask, ["seed", metric]].dropna()
    return {int(s): float(x) for s, x in zip(part["seed"], part[metric])}


def comparisons(spec: StudySpec, frame: pd.DataFrame, metrics: Optional[list[str]] = None) -> list[Comparison]:
    """The declared family (``metrics`` None) or the same pairs on other metrics (exploratory)."""
    levels = sorted({c.level for c in spec.cells()})
    out = []
    for d in spec.family():
        if metrics is not None and d.baseline is None:
            continue  # a constant is a claim about its own metric only
        for metric in metrics or [d.metric]:
            for level in levels:
                arm = Cell(d.arm, level)
                if d.baseline is not None:
                    base = Cell(d.baseline, level)
                    out.append(paired_comparison(_values(frame, arm, metric), _values(frame, base, metric), arm=arm.name, baseline=base.name, metric=metric))
                else:
                    values = _values(frame, arm, metric)
                    out.append(one_sample([values[s] for s in sorted(values)], constant=float(d.constant), metric=metric, label=arm.name))
    return out


def _arm_table(spec: StudySpec, frame: pd.DataFrame, metrics: list[str]) -> str:
    head = ["arm", "runs", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for cell in spec.cells():
        values = {m: _values(frame, cell, m) for m in metrics}
        done = sorted(values[metrics[0]])
        missing = [s for s in spec.seeds if s not in done]
        runs = f"{len(done)} of {len(spec.seeds)}" + (f" (no result: seed {', '.join(map(str, missing))})" if missing else "")
        cells = []
        for m in metrics:
            s = pd.Series(list(values[m].values()), dtype=float)
            cells.append("—" if s.empty else f"{s.mean():.4f} ± {s.std(ddof=1):.4f}" if len(s) > 1 else f"{s.mean():.4f}")
        lines.append("| " + " | ".join([cell.name, runs, *cells]) + " |")
    return "\n".join(lines) + "\n\nmean ± sample sd over the seeds that completed.\n"


def _design_warnings(spec: StudySpec, frame: pd.DataFrame) -> list[str]:
    """A primary metric that does not move cannot answer the question (every arm at floor or ceiling)."""
    notes = []
    values = frame.loc[frame["status"] == "completed", spec.primary].dropna() if spec.primary in frame else pd.Series(dtype=float)
    if len(values) > 1 and values.nunique() == 1:
        notes.append(f"**The primary metric is {values.iloc[0]:g} in every run**: at floor or ceiling in every arm, the study cannot answer its question; fix the design.")
    for cell in spec.cells():
        v = pd.Series(list(_values(frame, cell, spec.primary).values()), dtype=float)
        if len(v) > 1 and v.nunique() == 1 and not notes:
            notes.append(f"{cell.name}: the primary metric is {v.iloc[0]:g} on every seed (at floor or ceiling?).")
    if len(spec.seeds) < 6:
        notes.append(f"{len(spec.seeds)} seeds: fewer than 6, so only large effects are detectable (see the MDE column).")
    return notes


def _plots(spec: StudySpec, frame: pd.DataFrame, family: list[Comparison], stamp: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    cells = spec.cells()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(cells) + 2), 4.2), dpi=120)
    for i, cell in enumerate(cells):
        v = list(_values(frame, cell, spec.primary).values())
        ax.scatter([i] * len(v), v, s=14, color="tab:blue", alpha=0.6)
        if v:
            ax.hlines(sum(v) / len(v), i - 0.3, i + 0.3, color="black")
    ax.set_xticks(range(len(cells)), [c.name for c in cells], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(spec.primary)
    ax.set_title(f"{spec.primary}: every seed (dots) and the mean (bar)")
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.005, stamp, fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(spec.root / "results_primary.png")
    plt.close(fig)
    files.append(spec.root / "results_primary.png")
    shown = [c for c in family if not math.isnan(c.mean_diff)]
    if shown:
        fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(shown) + 1.6), dpi=120)
        for i, c in enumerate(shown):
            lo, hi = (c.ci_low, c.ci_high) if not math.isnan(c.ci_low) else (c.mean_diff, c.mean_diff)
            strong = not math.isnan(c.p_adjusted) and c.p_adjusted < 0.05
            ax.errorbar([c.mean_diff], [i], xerr=[[c.mean_diff - lo], [hi - c.mean_diff]], fmt="o", capsize=3, color="tab:red" if strong else "tab:gray")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(shown)), [f"{c.arm} − {c.baseline}" for c in shown], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {spec.primary} (95 % bootstrap CI; red: adjusted p < 0.05)")
        ax.grid(alpha=0.3, axis="x")
        fig.text(0.01, 0.005, stamp, fontsize=6, color="0.4")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(spec.root / "results_comparisons.png")
        plt.close(fig)
        files.append(spec.root / "results_comparisons.png")
    return files


def report(spec: StudySpec, allow_mixed_commits: bool = False, plots: bool = True, command: Optional[list[str]] = None) -> dict:
    frame, runs = collect(spec)
    done = frame[frame["status"] == "completed"]
    if done.empty:
        raise UserError("study", str(spec.root), "has no completed run yet; run `assay-study run` first")
    commits = sorted(set(done["commit"]))
    if len(commits) > 1 and not allow_mixed_commits:
        raise UserError("study", str(spec.root), f"its runs come from {len(commits)} commits ({', '.join(commits)}): rerun them at one commit "
                        "(`assay-study run` refuses to mix them), or pass --allow-mixed-commits to report them together (results.md then says so)")
    declared_metrics = sorted({spec.primary, *spec.secondary, *(d.metric for d in spec.family())})
    absent = [m for m in declared_metrics if m not in frame or frame[m].isna().all()]
    if absent:
        have = sorted(c for c in frame.columns if "/" in c)
        raise UserError("study", absent[0], f"no completed run has this metric; the runs have {', '.join(have[:12])}{' ...' if len(have) > 12 else ''}")

    frame.to_csv(spec.root / RUNS_FILE, index=False)
    family = adjust(comparisons(spec, frame), spec.correction)
    exploratory_metrics = [m for m in spec.secondary if m != spec.primary]
    exploratory = comparisons(spec, frame, exploratory_metrics) if exploratory_metrics else []
    missing = frame[frame["status"] != "completed"]

    lines = [f"# {spec.root.name}", ""]
    if spec.question:
        lines += [f"**Question.** {spec.question}", ""]
    lines += [f"**Primary metric** (declared in study.yaml before the runs): `{spec.primary}`. Seeds: {', '.join(map(str, spec.seeds))}. "
              f"Code: {', '.join(commits)}" + (" (**pooled across commits**, --allow-mixed-commits)" if len(commits) > 1 else "") + ".", ""]
    for note in _design_warnings(spec, frame):
        lines += [f"> {note}", ""]
    if len(missing):
        lines += [f"> **{len(missing)} of {len(frame)} runs have no result** (marked below): " + ", ".join(
            f"{r['arm']}{''.join(f'@{k}={r[k]}' for k in spec.cross)} seed {r['seed']} ({r['status']})" for _, r in missing.iterrows()) + ".", ""]
    lines += ["## Declared comparisons (the headline)", ""]
    lines += [markdown(family, correction=spec.correction) if family else "No comparison was declared: this study only describes its arms.", ""]
    lines += ["## Per arm", "", _arm_table(spec, frame, [spec.primary, *exploratory_metrics]), ""]
    if exploratory:
        lines += ["## Exploratory (not declared: not evidence for or against anything)", "",
                  "The declared pairs on the secondary metrics; corrected only within this section.", "",
                  markdown(adjust(exploratory, spec.correction), correction=spec.correction), ""]
    lines.append(f"Every number above is recomputed from `{RUNS_FILE}` (one row per run) by `assay-study report {spec.root}`.")
    text = "\n".join(lines) + "\n" + provenance_footer(runs, command or ["assay-study", *sys.argv[1:]])
    (spec.root / RESULTS_FILE).write_text(text)
    files = [spec.root / RUNS_FILE, spec.root / RESULTS_FILE]
    if plots:
        files += _plots(spec, frame, family, f"commits: {', '.join(commits)}")
    return {"runs": frame, "family": family, "exploratory": exploratory, "files": files, "text": text}
