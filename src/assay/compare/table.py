"""Aggregating runs for ``assay-compare``: runs that share the ``--by`` values (and differ only in
their seed) are one group, and each metric is reported as mean ± std over the group with its n."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pandas as pd

from assay.compare.readers import Run
from assay.errors import UserError
from assay.run.results import HEADLINE

# Keys that differ between runs of one group by construction: seeds (aggregated over) and where
# the run wrote its files.
NOT_A_FACTOR = re.compile(r"(^|\.)seed$|^paths\.|^_wandb|^stages?$|^ckpt_path$")


def varying_keys(runs: list[Run]) -> list[str]:
    keys = sorted({k for r in runs for k in r.config})
    out = []
    for k in keys:
        if NOT_A_FACTOR.search(k):
            continue
        values = {json.dumps(r.config.get(k), sort_keys=True, default=str) for r in runs if r.status != "missing"}
        if len(values) > 1:
            out.append(k)
    return out


def check_keys(runs: list[Run], by: list[str]) -> list[str]:
    """The --by keys as config keys; a config group's name stands for its derived method label where
    runs record one (objective -> objective.method: dpo+dr_dpo), else for its option (-> objective.name)."""
    known = sorted({k for r in runs for k in r.config})
    by = [next((f"{k}.{leaf}" for leaf in ("method", "name") if f"{k}.{leaf}" in known), k) if k not in known else k for k in by]
    for key in by:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, known, n=4, cutoff=0.5)
            hint = f"did you mean {close}?" if close else "use dotted config keys such as objective.name or noise.p"
            raise UserError("--by", key, f"no run has this config key; {hint}")
    return by


def choose_metrics(runs: list[Run], asked: list[str]) -> list[str]:
    available = sorted({m for r in runs for m in r.metrics})
    if asked:
        for m in asked:
            if m not in available and any(r.status == "completed" for r in runs):
                raise UserError("--metric", m, f"no completed run has it; available: {available[:12]}{' ...' if len(available) > 12 else ''}")
        return asked
    # Selection detection (selection/<flag>/auroc, precision_at_k, kept_rate) is shown whenever runs
    # have it: it is what a selection study compares, and a run records it only when the data has
    # ground-truth noise flags.
    detection = [m for m in available if m.startswith("selection/")]
    return [m for m in HEADLINE if m in available] + detection or available[:4]


def value_label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def aggregate(runs: list[Run], by: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per group: the by-values, n (completed runs), failed, the commit(s) of its completed
    runs, then mean/std of each metric."""
    rows: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        key = tuple(value_label(r.config.get(k)) for k in by)
        row = rows.setdefault(key, {**dict(zip(by, key)), "n": 0, "failed": 0, "_values": {m: [] for m in metrics}, "_raw": {k: r.config.get(k) for k in by}, "_commits": set()})
        if r.status == "completed":
            row["n"] += 1
            row["_commits"].add(r.commit)
            for m in metrics:
                if m in r.metrics:
                    row["_values"][m].append(r.metrics[m])
        else:
            row["failed"] += 1
    table = []
    for row in rows.values():
        values = row.pop("_values")
        row.pop("_raw")
        row["commit"] = ", ".join(sorted(row.pop("_commits")))
        for m in metrics:
            s = pd.Series(values[m], dtype=float)
            row[f"{m} mean"] = float(s.mean()) if len(s) else math.nan
            row[f"{m} std"] = float(s.std(ddof=1)) if len(s) > 1 else (0.0 if len(s) == 1 else math.nan)
            row[f"{m} n"] = len(s)
        table.append(row)
    df = pd.DataFrame(table)
    for col in [c for c in df.columns if c in ("n", "failed") or c.endswith(" n")]:
        df[col] = df[col].astype(int)
    return df.sort_values(by, key=_sort_key).reset_index(drop=True) if by and len(df) else df


def _sort_key(col: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(col, errors="coerce")
    return numbers if numbers.notna().all() else col.astype(str)


def fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return "—"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def runs_frame(runs: list[Run], by: list[str], metrics: list[str]) -> pd.DataFrame:
    rows = []
    for r in runs:
        rows.append({"run": r.name, "source": r.source, "status": r.status, "commit": r.commit, **{k: r.config.get(k) for k in by}, "seed": r.config.get("seed"),
                     **{m: r.metrics.get(m) for m in metrics}, "reason": r.reason})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, by: list[str], metrics: list[str], bad: list[Run]) -> str:
    head = [*by, "n", *metrics] + (["failed"] if bad else []) + ["commit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in by] + [str(row["n"])] + [fmt(row[f"{m} mean"], row[f"{m} std"], row[f"{m} n"]) for m in metrics]
        if bad:
            cells.append(str(row["failed"]))
        cells.append(str(row["commit"]) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\nValues are mean ± std over seeds (sample std, n runs per group).\n"
    if bad:
        text += "\nRuns without a result:\n\n" + "\n".join(f"- `{r.name}`: {r.status} — {r.reason}" for r in bad) + "\n"
    return text


def print_table(table: pd.DataFrame, by: list[str], metrics: list[str], bad: list[Run]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="assay-compare (mean ± std over seeds)", show_header=True)
    for k in by:
        t.add_column(k)
    t.add_column("n", justify="right")
    for m in metrics:
        t.add_column(m, justify="right")
    if bad:
        t.add_column("failed", justify="right", style="red")
    t.add_column("commit")
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in by] + [str(row["n"])] + [fmt(row[f"{m} mean"], row[f"{m} std"], row[f"{m} n"]) for m in metrics]
        t.add_row(*cells, *([str(row["failed"])] if bad else []), str(row["commit"]) or "—")
    console = Console(width=max(100, 22 * (len(by) + len(metrics)) + 30))  # + the commit column
    console.print(t)
    for r in bad:
        console.print(f"[red]{r.status}[/red] {r.name}: {r.reason}")


def mixed_commits(table: pd.DataFrame, by: list[str]) -> list[str]:
    """The groups whose completed runs come from more than one commit (as "by-values: commits")."""
    return [", ".join(f"{k}={row[k]}" for k in by) + f": {row['commit']}" for _, row in table.iterrows() if "," in str(row["commit"])]


def provenance_footer(runs: list[Run], command: list[str] | None = None) -> str:
    """Under every table: which code produced it (each commit and how many runs), the library
    versions of those runs (a version that differs between runs is listed with each value), when the
    table was written and by which command."""
    import shlex
    import sys
    from collections import Counter
    from datetime import datetime, timezone

    done = [r for r in runs if r.status == "completed"]
    commits = Counter(r.commit for r in done)
    versions: dict[str, set[str]] = {}
    for r in done:
        for name, version in (r.provenance.get("versions") or {}).items():
            versions.setdefault(name, set()).add(str(version))
    lines = ["", "---", "", "Provenance: " + ("; ".join(f"commit {c} ({n} run{'s' * (n != 1)})" for c, n in sorted(commits.items())) or "no completed run")]
    if "unknown" in commits:
        lines.append("(`unknown`: runs that recorded no commit, written before provenance was recorded or outside a git checkout.)")
    if versions:
        lines.append("Versions: " + ", ".join(f"{k} {' / '.join(sorted(v))}" for k, v in sorted(versions.items())))
    lines.append(f"Written {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `{shlex.join(command or ['assay-compare', *sys.argv[1:]])}`")
    return "\n".join(lines) + "\n"


def provenance_stamp(runs: list[Run]) -> str:
    """The one-line form for the foot of a figure: the commits and the date."""
    from datetime import datetime, timezone

    commits = sorted({r.commit for r in runs if r.status == "completed"}) or ["no completed run"]
    return f"commits: {', '.join(commits)}  ·  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
