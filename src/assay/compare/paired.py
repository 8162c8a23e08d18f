"""Paired differences for ``assay-compare --paired-with key=value``: each group against the group
that differs from it only in ``key`` (set to ``value``), run by run on the same seed (the same
initialisation, data order and noise draw), with the two-sided paired t-test across seeds, a
bootstrap CI, the minimum detectable effect, and on the primary metric the correction over every
row (the rows are the family of comparisons the table makes).

Why paired: seeds move every arm together (the flips drawn, the order the data comes in), so the
difference on one seed has a much smaller spread than either arm's own; why the t-test and not the
signed-rank test: with 3-5 seeds the signed-rank test cannot reach p < 0.05 at all (its smallest
two-sided p-value with n pairs is 2 / 2^n)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from assay.compare.readers import Run
from assay.compare.stats import adjust, one_sample, paired_comparison
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


def paired(runs: list[Run], by: list[str], metrics: list[str], against: str, primary: str | None = None, correction: str = "holm") -> pd.DataFrame:
    """One row per group that has a baseline: the by-values, then per metric the mean and sample std
    of (group − baseline) over shared seeds, its 95 % bootstrap CI, the paired t-test p-value, the
    minimum detectable effect and the number of pairs (``assay.compare.stats``). On the primary
    metric (default: the first) the rows are the declared family: ``<primary> p adjusted`` is the
    Holm (or BH) correction over them; the other metrics are exploratory and get no adjusted p."""
    key, value = parse_against(against, by)
    primary = primary or metrics[0]
    if primary not in metrics:
        raise UserError("--primary", primary, f"must be one of the reported metrics {metrics}")
    at = by.index(key)
    done = [r for r in runs if r.status == "completed" and r.config.get("seed") is not None]
    by_group: dict[tuple, dict[Any, Run]] = {}
    for r in done:
        by_group.setdefault(tuple(value_label(r.config.get(k)) for k in by), {})[r.config["seed"]] = r
    if not any(g[at] == value for g in by_group):
        raise UserError("--paired-with", against, f"no completed run has {key}={value}; values: {sorted({g[at] for g in by_group})}")
    rows, family = [], []
    for group, seeds in by_group.items():
        base_key = group[:at] + (value,) + group[at + 1:]
        base = by_group.get(base_key)
        if group[at] == value or base is None:
            continue
        row: dict[str, Any] = dict(zip(by, group))
        for m in metrics:
            c = paired_comparison({s: r.metrics[m] for s, r in seeds.items() if m in r.metrics}, {s: r.metrics[m] for s, r in base.items() if m in r.metrics},
                                  arm=",".join(group), baseline=",".join(base_key), metric=m)
            row.update({f"{m} delta": c.mean_diff if c.n else math.nan, f"{m} delta std": c.sd_diff, f"{m} ci low": c.ci_low, f"{m} ci high": c.ci_high,
                        f"{m} p": c.p, f"{m} mde": c.mde, f"{m} pairs": c.n})
            if m == primary:
                family.append(c)
        rows.append(row)
    for row, c in zip(rows, adjust(family, correction)):
        row[f"{primary} p adjusted"] = c.p_adjusted
    return pd.DataFrame(rows)


def paired_markdown(table: pd.DataFrame, by: list[str], metrics: list[str], against: str, primary: str | None = None, correction: str = "holm") -> str:
    key, value = parse_against(against, by)
    primary = primary or metrics[0]
    name = {"holm": "Holm", "bh": "BH"}[correction]
    head = [*by, f"Δ {primary} [95 % CI]", "p", f"p ({name})", "MDE", "n"]
    lines = [f"Declared family: every group − the group with {key}={value} on `{primary}`.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    small = False
    for _, row in table.iterrows():
        n = int(row[f"{primary} pairs"])
        small |= 1 < n < 5
        delta = "—" if n == 0 else f"{row[f'{primary} delta']:+.4f}" + ("" if math.isnan(row[f"{primary} ci low"]) else f" [{row[f'{primary} ci low']:+.4f}, {row[f'{primary} ci high']:+.4f}]")
        lines.append("| " + " | ".join([*(str(row[k]) for k in by), delta, _p(row[f"{primary} p"]), _p(row[f"{primary} p adjusted"]),
                                          "—" if math.isnan(row[f"{primary} mde"]) else f"{row[f'{primary} mde']:.4f}", str(n)]) + " |")
    text = "\n".join(lines) + (
        f"\n\nΔ = group − the group with {key}={value}, on the same seed: mean over the shared seeds with its 95 % bootstrap CI; "
        f"p: two-sided paired t-test; p ({name}): corrected over the {int(table[f'{primary} p'].notna().sum()) if len(table) else 0} rows with a p-value; "
        "MDE: the smallest true Δ detectable at 80 % power with these seeds (a non-significant Δ below it is not measurable, not absent).\n")
    if small:
        text += "\n**Warning: fewer than 5 paired seeds** in some rows: the test has little power and the bootstrap CI is too narrow.\n"
    others = [m for m in metrics if m != primary]
    if others:
        rows = ["| " + " | ".join([*by, *(f"Δ {m}" for m in others)]) + " |", "|" + "|".join("---" for _ in [*by, *others]) + "|"]
        for _, row in table.iterrows():
            cells = [str(row[k]) for k in by]
            for m in others:
                d, sd, p, n = row[f"{m} delta"], row[f"{m} delta std"], row[f"{m} p"], int(row[f"{m} pairs"])
                cells.append("—" if n == 0 else f"{d:+.4f}" + (f" ± {sd:.4f} (p = {p:.3f}, n = {n})" if n > 1 and not math.isnan(p) else f" (n = {n})"))
            rows.append("| " + " | ".join(cells) + " |")
        text += ("\n### Exploratory (not declared; p not corrected)\n\n" + "\n".join(rows)
                 + "\n\nmean ± sample std of Δ over the shared seeds, uncorrected two-sided paired t-test.\n")
    return text


def _p(p: float) -> str:
    return "—" if p is None or math.isnan(p) else f"{p:.3g}"


def against_constant(runs: list[Run], by: list[str], claim: str, correction: str = "holm") -> pd.DataFrame:
    """``assay-compare --vs-constant METRIC=VALUE``: each group's runs against a fixed value (an
    AUROC against chance, 0.5) with the one-sample t-test over seeds, its bootstrap CI and MDE, and
    the correction over the groups (the family this table makes)."""
    metric, sep, value = claim.rpartition("=")
    try:
        constant = float(value)
    except ValueError:
        constant = None
    if not sep or not metric or constant is None:
        raise UserError("--vs-constant", claim, "write METRIC=VALUE, e.g. selection/is_corrupted/auroc=0.5")
    groups: dict[tuple, list[float]] = {}
    for r in runs:
        if r.status == "completed" and metric in r.metrics:
            groups.setdefault(tuple(value_label(r.config.get(k)) for k in by), []).append(float(r.metrics[metric]))
    if not groups:
        raise UserError("--vs-constant", claim, f"no completed run has the metric {metric}")
    family = adjust([one_sample(v, constant=constant, metric=metric, label=",".join(g)) for g, v in groups.items()], correction)
    return pd.DataFrame([{**dict(zip(by, g)), "metric": metric, "constant": constant, "n": c.n, "mean - constant": c.mean_diff, "ci low": c.ci_low,
                          "ci high": c.ci_high, "p": c.p, "p adjusted": c.p_adjusted, "mde": c.mde} for g, c in zip(groups, family)])


def constant_markdown(table: pd.DataFrame, by: list[str], correction: str = "holm") -> str:
    name = {"holm": "Holm", "bh": "BH"}[correction]
    metric, constant = table["metric"].iloc[0], table["constant"].iloc[0]
    head = [*by, f"{metric} − {constant:g} [95 % CI]", "p", f"p ({name})", "MDE", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, row in table.iterrows():
        ci = "" if math.isnan(row["ci low"]) else f" [{row['ci low']:+.4f}, {row['ci high']:+.4f}]"
        lines.append("| " + " | ".join([*(str(row[k]) for k in by), f"{row['mean - constant']:+.4f}{ci}", _p(row["p"]), _p(row["p adjusted"]),
                                          "—" if math.isnan(row["mde"]) else f"{row['mde']:.4f}", str(int(row["n"]))]) + " |")
    return "\n".join(lines) + (f"\n\nEach group's runs against the constant {constant:g}: mean difference over seeds with its 95 % bootstrap CI, "
                               f"two-sided one-sample t-test, {name}-corrected over the groups, MDE at 80 % power.\n")
