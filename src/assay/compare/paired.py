"""Paired differences for ``assay-compare --paired-with key=value``: each group against the group
that differs from it only in ``key`` (set to ``value``), run by run on the same seed (the same
initialisation, data order and noise draw), with the two-sided paired t-test across seeds.

Why paired: seeds move every arm together (the flips drawn, the order the data comes in), so the
difference on one seed has a much smaller spread than either arm's own; why the t-test and not the
signed-rank test: with 3-5 seeds the signed-rank test cannot reach p < 0.05 at all (its smallest
two-sided p-value with n pairs is 2 / 2^n)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from assay.compare.readers import Run
from assay.compare.table import value_label
from assay.errors import UserError


def parse_against(text: str, by: list[str]) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep and len(by) == 1:
        key, value = by[0], text
    elif not sep:
        raise UserError("--paired-with", text, f"write key=value, with key one of the --by keys {by}")
    key = next((k for k in by if k == key or k.rsplit(".", 1)[0] == key), key)
    if key not in by:
        raise UserError("--paired-with", text, f"{key} is not a --by key; --by is {by}")
    return key, value


def paired(runs: list[Run], by: list[str], metrics: list[str], against: str) -> pd.DataFrame:
    """One row per group that has a baseline: the by-values, then per metric the mean and sample std
    of (group − baseline) over shared seeds, the paired t-test p-value and the number of pairs."""
    from scipy.stats import ttest_rel

    key, value = parse_against(against, by)
    at = by.index(key)
    done = [r for r in runs if r.status == "completed" and r.config.get("seed") is not None]
    by_group: dict[tuple, dict[Any, Run]] = {}
    for r in done:
        by_group.setdefault(tuple(value_label(r.config.get(k)) for k in by), {})[r.config["seed"]] = r
    if not any(g[at] == value for g in by_group):
        raise UserError("--paired-with", against, f"no completed run has {key}={value}; values: {sorted({g[at] for g in by_group})}")
    rows = []
    for group, seeds in by_group.items():
        base = by_group.get(group[:at] + (value,) + group[at + 1:])
        if group[at] == value or base is None:
            continue
        row: dict[str, Any] = dict(zip(by, group))
        for m in metrics:
            shared = sorted(s for s in seeds if s in base and m in seeds[s].metrics and m in base[s].metrics)
            mine = [float(seeds[s].metrics[m]) for s in shared]
            theirs = [float(base[s].metrics[m]) for s in shared]
            diff = pd.Series([a - b for a, b in zip(mine, theirs)], dtype=float)
            row[f"{m} delta"] = float(diff.mean()) if len(diff) else math.nan
            row[f"{m} delta std"] = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
            row[f"{m} p"] = float(ttest_rel(mine, theirs).pvalue) if len(diff) > 1 and diff.std(ddof=1) > 0 else math.nan
            row[f"{m} pairs"] = len(diff)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_markdown(table: pd.DataFrame, by: list[str], metrics: list[str], against: str) -> str:
    key, value = parse_against(against, by)
    lines = ["| " + " | ".join([*by, *(f"Δ {m}" for m in metrics)]) + " |", "|" + "|".join("---" for _ in [*by, *metrics]) + "|"]
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in by]
        for m in metrics:
            d, sd, p, n = row[f"{m} delta"], row[f"{m} delta std"], row[f"{m} p"], row[f"{m} pairs"]
            cells.append("—" if n == 0 else f"{d:+.4f}" + (f" ± {sd:.4f} (p = {p:.3f}, n = {n})" if n > 1 and not math.isnan(p) else f" (n = {n})"))
        lines.append("| " + " | ".join(cells) + " |")
    return ("\n".join(lines) + f"\n\nΔ = group − the group with {key}={value}, on the same seed: mean ± sample std over the "
            "shared seeds, two-sided paired t-test p-value, n pairs.\n")
