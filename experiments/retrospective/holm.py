"""Retrospective re-analysis of the wave-two studies' committed per-run rows with corrected statistics.

The studies were analysed with uncorrected paired t-tests picked from many comparisons. Here each
study gets one family, fixed by its design (every arm against the study's baseline, within every
noise level, on the metric its README leads with; for detection, every scorer's AUROC against
chance, 0.5), and the Holm correction over that family (assay.compare.stats: scipy and statsmodels).
These families were not pre-registered: they are the most natural reading of each design, chosen
before looking at the adjusted results, and they are exactly what this script computes.

    .venv/bin/python experiments/retrospective/holm.py        # writes experiments/retrospective/results.md
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from assay.compare.stats import adjust, markdown, one_sample, paired_comparison

REPO = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "results.md"

# study -> (runs.csv, arm column, level column or None, metric, baseline arm or None for a constant, constant)
STUDIES = {
    "noisy_prefs": ("experiments/noisy_prefs/results/runs.csv", "objective.name", "noise.p", "test/pref_acc", "dpo", None),
    "noisy_prefs_v2": ("experiments/noisy_prefs_v2/results/runs.csv", "method", "p", "test/pref_acc", "dpo", None),
    "ordering": ("experiments/ordering/results/runs.csv", "ordering.name", None, "test/exact_match", "random", None),
    "gotd (keep 20 %)": ("experiments/gotd/results/runs.csv", "selection.name", None, "test/exact_match/add", "random", None),
    "gotd (keep 10 %)": ("experiments/gotd/results_f0.1/runs.csv", "selection.name", None, "test/exact_match/add", "random", None),
    "online_mixing": ("experiments/online_mixing/results/runs.csv", "arm", None, "test/exact_match", "natural", None),
    "selection_detection": ("experiments/selection_detection/results/runs.csv", "selection.name", "noise.p", "selection/is_corrupted/auroc", None, 0.5),
}


def rows_commit(path: str) -> str:
    out = subprocess.run(["git", "log", "-1", "--format=%h", "--", path], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return out or "uncommitted"


def family(frame: pd.DataFrame, arm_col: str, level_col: str | None, metric: str, baseline: str | None, constant: float | None):
    levels = sorted(frame[level_col].unique()) if level_col else [None]
    out = []
    for level in levels:
        part = frame if level is None else frame[frame[level_col] == level]
        suffix = "" if level is None else f"@{level_col}={level:g}" if isinstance(level, float) else f"@{level_col}={level}"
        arms = [a for a in dict.fromkeys(part[arm_col]) if a != baseline and not (constant is not None and a in ("none", "random"))]
        for arm in arms:
            values = part[part[arm_col] == arm].dropna(subset=[metric]).set_index("seed")[metric]
            if constant is not None:
                out.append(one_sample(list(values), constant=constant, metric=metric, label=arm + suffix))
            else:
                base = part[part[arm_col] == baseline].dropna(subset=[metric]).set_index("seed")[metric]
                out.append(paired_comparison(values.to_dict(), base.to_dict(), arm=arm + suffix, baseline=baseline + suffix, metric=metric))
    return out


def main(out: Path = OUT) -> None:
    text = [__doc__.split("\n\n")[0].replace('"""', ""), "", "Command: `.venv/bin/python experiments/retrospective/holm.py`.", ""]
    for name, (path, arm_col, level_col, metric, baseline, constant) in STUDIES.items():
        frame = pd.read_csv(REPO / path)
        if "status" in frame:
            frame = frame[frame["status"] == "completed"]
        if arm_col == "arm":
            frame = frame.assign(arm=frame["run"].map(lambda r: r.split("/")[-2]))
        comps = adjust(family(frame, arm_col, level_col, metric, baseline, constant))
        hits = [c for c in comps if c.p_adjusted < 0.05]
        raw = sum(c.p < 0.05 for c in comps)
        what = f"against {constant:g}" if constant is not None else f"against `{baseline}`"
        text += [f"## {name}", "",
                 f"Rows: `{path}` (committed at {rows_commit(path)}; the code commit of these runs was not recorded). "
                 f"Family: every arm {what} on `{metric}`" + (f", within each `{level_col}`" if level_col else "") + f" — {len(comps)} comparisons, "
                 f"{raw} with unadjusted p < 0.05, **{len(hits)} with Holm-adjusted p < 0.05**"
                 + (": " + "; ".join(f"{c.arm} {c.mean_diff:+.3f} (p_Holm = {c.p_adjusted:.3g})" for c in hits) if hits else "") + ".", "",
                 markdown(comps), ""]
    out.write_text("\n".join(text))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
