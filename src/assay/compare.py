"""``assay-compare``: a sweep (or any set of runs) -> one table, CSV, Markdown and plots.

    assay-compare logs/train/multirun/2026-11-21_10-00-00 --by objective.name,noise.p --metric test/pref_acc
    assay-compare runA runB runC                       # explicit run directories
    assay-compare logs/train/multirun/x/0/wandb        # wandb offline run directories
    assay-compare wandb:my-entity/assay --by objective.name   # runs on the wandb server

Runs that share the ``--by`` values (and differ only in their seed) are one group: each metric is
reported as mean ± std over the group with its n. A run without a summary (failed, killed, still
running) or a sweep job that never produced a directory is listed as such, never silently dropped,
because a seed that crashed is part of the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from assay.errors import UserError
from assay.registry import GROUPS

HEADLINE = ("test/exact_match", "test/pref_acc", "test/reward_margin", "test/loss", "val/exact_match", "val/loss")
CURVES = ("train/loss", "val/loss")
# Keys that differ between runs of one group by construction: seeds (aggregated over) and where
# the run wrote its files.
NOT_A_FACTOR = re.compile(r"(^|\.)seed$|^paths\.|^_wandb|^stages?$|^ckpt_path$")
WANDB_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$")


@dataclass
class Run:
    name: str
    source: str
    """local | wandb-offline | wandb"""
    status: str
    """completed | failed (no summary) | missing (a sweep job without a directory); for SLURM sweep jobs
    without a result: running (queued or running) | cancelled | failed"""
    config: dict[str, Any]
    """Flat, dotted keys (objective.name, noise.p, seed)."""
    metrics: dict[str, float] = field(default_factory=dict)
    history: pd.DataFrame | None = None
    reason: str = ""


# --------------------------------------------------------------------------------------------------
# Reading runs


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    return out


def _read_mapping(path: Path, kind: str) -> dict:
    """A run's config (YAML) or summary (JSON) as a dict; a half-written file is one clear error."""
    import yaml

    parse, bad = (json.loads, json.JSONDecodeError) if kind == "JSON" else (yaml.safe_load, yaml.YAMLError)
    try:
        data = parse(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError("run", str(path.parent), f"cannot read {path.name} ({type(e).__name__})") from None
    except bad:
        raise UserError("run", str(path.parent), f"{path.name} is half-written or not {kind}; rerun or remove that run") from None
    if not isinstance(data, dict):
        raise UserError("run", str(path.parent), f"{path.name} is empty or half-written; rerun or remove that run")
    return data


def _read_yaml(path: Path) -> dict:
    return _read_mapping(path, "YAML")


def _read_json(path: Path) -> dict:
    return _read_mapping(path, "JSON")


def _numeric(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / ".hydra" / "config.yaml").is_file() or (path / "summary.json").is_file()


def is_wandb_run_dir(path: Path) -> bool:
    return path.name.startswith(("offline-run-", "run-")) and (path / "files").is_dir()


def read_local_run(path: Path) -> Run:
    """One assay run directory: config.yaml (or Hydra's copy), summary.json, metrics.csv."""
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError("run", str(path), "directory is not readable")
    cfg_file = path / "config.yaml" if (path / "config.yaml").is_file() else path / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        raise UserError("run", str(path), "not a run directory: no config.yaml or .hydra/config.yaml")
    config = flatten({k: v for k, v in _read_yaml(cfg_file).items() if k != "hydra"})
    history = None
    if (path / "metrics.csv").is_file():
        try:
            history = pd.read_csv(path / "metrics.csv")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            history = None  # a run killed mid-write: the curve is lost, the summary still counts
    if not (path / "summary.json").is_file():
        return Run(str(path), "local", "failed", config, history=history, reason="no summary.json (failed, killed or still running)")
    summary = _read_json(path / "summary.json")
    if "metrics" not in summary or not isinstance(summary["metrics"], dict):
        raise UserError("run", str(path), "summary.json has no 'metrics' object; rerun or remove that run")
    status = summary.get("status", "completed")
    return Run(str(path), "local", status, config, _numeric(summary["metrics"]), history)


def read_wandb_offline(path: Path) -> Run:
    """A wandb run directory (offline-run-* or run-*): config, per-step history, final summary and
    exit code from the run's .wandb record file (what `wandb sync` uploads); files/config.yaml and
    files/wandb-summary.json where wandb wrote them."""
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history, exit_code = None, None
    records = sorted(path.glob("*.wandb"))
    if records:
        config, summary, history, exit_code = _read_wandb_records(records[0])
    if (path / "files" / "config.yaml").is_file():
        for k, v in _read_yaml(path / "files" / "config.yaml").items():
            if not str(k).startswith("_wandb"):
                config.update(flatten({k: v["value"] if isinstance(v, dict) and "value" in v else v}))
    if (path / "files" / "wandb-summary.json").is_file():
        summary.update(_read_json(path / "files" / "wandb-summary.json"))
    if not config and not summary:
        raise UserError("run", str(path), "wandb run directory without a readable .wandb record file, config or summary")
    config = {k: v for k, v in config.items() if not k.startswith(("_wandb", "summary/"))}
    metrics = {k: v for k, v in _numeric(summary).items() if not k.startswith("_")}
    done = (summary.get("status") == "completed" or any(k.startswith("test/") for k in metrics)) and exit_code in (None, 0)
    reason = "" if done else f"no final summary (exit code {exit_code}; failed, killed or still running)"
    return Run(str(path), "wandb-offline", "completed" if done else "failed", config, metrics if done else {}, history, reason)


def _wandb_log_records(file: Path) -> Iterable[bytes]:
    """The records of a .wandb file: a LevelDB-style log (7-byte file header ':W&B' + magic + version,
    then 32 KiB blocks of chunks, each with a 7-byte header: crc32, length, type full/first/middle/last)."""
    import struct

    data = file.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError("not a wandb record file")
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk
            buf = b""


def _read_wandb_records(file: Path) -> tuple[dict, dict, pd.DataFrame | None, int | None]:
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    rows: list[dict] = []
    exit_code = None

    def items(updates):
        for item in updates:
            key = item.key or "/".join(item.nested_key)
            try:
                yield key, json.loads(item.value_json)
            except ValueError:
                continue

    try:
        from wandb.proto import wandb_internal_pb2

        for data in _wandb_log_records(file):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(data)
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                for k, v in items(rec.run.config.update):
                    config.update(flatten({k: v}))
            elif kind == "config":
                for k, v in items(rec.config.update):
                    config.update(flatten({k: v}))
            elif kind == "summary":
                summary.update(dict(items(rec.summary.update)))
            elif kind == "history":
                rows.append(dict(items(rec.history.item)))
            elif kind == "exit":
                exit_code = rec.exit.exit_code
    except Exception:  # a record file cut off by a kill: keep what was read
        pass
    history = pd.DataFrame(rows) if rows else None
    if history is not None:
        step = "trainer/global_step" if "trainer/global_step" in history else "_step" if "_step" in history else None
        if step:
            history["step"] = history[step]
    return config, summary, history, exit_code


def read_wandb_api(project: str) -> list[Run]:
    if not WANDB_PATH.match(project):
        raise UserError("wandb project", project, "expected 'project' or 'entity/project' (letters, digits, - _ .)")
    from assay.loggers import _has_wandb_credentials

    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun") or not _has_wandb_credentials():
        raise UserError(
            "wandb project", project,
            "reading from the wandb server needs a login (WANDB_API_KEY or `wandb login`) and WANDB_MODE online; "
            "for offline runs pass their run directories instead",
        )
    import wandb

    try:
        api = wandb.Api(timeout=30)
        runs = list(api.runs(project))
    except Exception as e:
        raise UserError("wandb project", project, f"cannot list its runs ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    out = []
    for r in runs:
        config = {}
        for k, v in dict(r.config).items():
            if not k.startswith("_"):
                config.update(flatten({k: v}))
        summary = _numeric(dict(r.summary._json_dict))
        metrics = {k: v for k, v in summary.items() if not k.startswith("_")}
        done = r.state == "finished"
        try:
            history = r.history(keys=list(CURVES), samples=500, pandas=True)
            if "trainer/global_step" in history:
                history["step"] = history["trainer/global_step"]
            elif "_step" in history:
                history["step"] = history["_step"]
        except Exception:
            history = None
        out.append(Run(f"{project}/{r.id}", "wandb", "completed" if done else "failed", config, metrics if done else {}, history, "" if done else f"state {r.state}"))
    return out


def read_sweep(path: Path) -> list[Run]:
    """Every job of a Hydra multirun directory; jobs the sweep should have produced but did not are
    listed as missing (their overrides tell which combination is absent)."""
    job_dirs = sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and is_run_dir(p)), key=_job_key)
    runs = [read_local_run(p) for p in job_dirs]
    for num, overrides in _expected_jobs(path).items():
        if not (path / str(num)).is_dir():
            config = {}
            for o in overrides:
                key, _, value = o.lstrip("+~").partition("=")
                # A group choice (objective=dpo) is the option's name in a run's config (objective.name).
                config[f"{key}.name" if "." not in key and "/" not in key and key in GROUPS else key] = _parse_scalar(value)
            runs.append(Run(str(path / str(num)), "local", "missing", config, reason="no job directory (never started, or lost)"))
    return _with_job_states(path, runs)


def _with_job_states(sweep: Path, runs: list[Run]) -> list[Run]:
    """A job without a result, as its scheduler saw it: ``running`` (queued or running), ``cancelled``
    or ``failed``, with the reason (SLURM sweeps, from the sweep's .submitit records and squeue)."""
    from assay.slurm import job_states

    states = job_states(sweep)
    for r in runs:
        num = Path(r.name).name
        if r.status != "completed" and num.isdigit() and int(num) in states:
            r.status, r.reason = states[int(num)]
    return runs


def _job_key(p: Path) -> tuple:
    return (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name)


def _parse_scalar(value: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _expected_jobs(sweep: Path) -> dict[int, list[str]]:
    """job num -> overrides, from the sweep's multirun.yaml (grid sweeps only)."""
    file = sweep / "multirun.yaml"
    if not file.is_file():
        return {}
    try:
        hydra_cfg = _read_yaml(file).get("hydra", {})
        if "BasicSweeper" not in str(hydra_cfg.get("sweeper", {}).get("_target_", "")):
            return {}
        from assay.preflight import expand, sweeper_params_overrides

        task = list(hydra_cfg.get("overrides", {}).get("task", []))
        params = hydra_cfg.get("sweeper", {}).get("params") or {}
        jobs = expand(sweeper_params_overrides(params) + task, True)
    except Exception:
        return {}
    return dict(enumerate(jobs))


def collect(inputs: Iterable[str]) -> list[Run]:
    runs: list[Run] = []
    for arg in inputs:
        if arg.startswith("wandb:"):
            runs += read_wandb_api(arg[len("wandb:"):])
            continue
        path = Path(arg)
        if not path.exists():
            if WANDB_PATH.match(arg) and arg.count("/") <= 1 and not arg.startswith("."):
                runs += read_wandb_api(arg)
                continue
            raise UserError("runs", arg, "no such directory, and not a wandb project path ('entity/project' or wandb:entity/project)")
        if not path.is_dir():
            raise UserError("runs", arg, "expected a sweep directory, a run directory or a wandb run directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise UserError("runs", arg, "directory is not readable")
        if is_wandb_run_dir(path):
            runs.append(read_wandb_offline(path))
        elif is_run_dir(path) and not (path / "multirun.yaml").is_file():
            runs.append(read_local_run(path))
        elif (path / "multirun.yaml").is_file() or any(p.is_dir() and is_run_dir(p) for p in path.iterdir()):
            runs += read_sweep(path)
        elif any(is_wandb_run_dir(p) for p in path.iterdir() if p.is_dir()):
            runs += [read_wandb_offline(p) for p in sorted(path.iterdir()) if p.is_dir() and is_wandb_run_dir(p)]
        else:
            found = sorted({p.parent for p in path.rglob("config.yaml") if p.parent.name != ".hydra" and is_run_dir(p.parent)})
            if not found:
                raise UserError("runs", arg, "no runs inside (no config.yaml, summary.json or wandb run directories)")
            runs += [read_local_run(p) for p in found]
    if not runs:
        raise UserError("runs", list(inputs), "no runs found")
    return runs


# --------------------------------------------------------------------------------------------------
# Aggregating


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


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def aggregate(runs: list[Run], by: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per group: the by-values, n (completed runs), failed, then mean/std of each metric."""
    rows: dict[tuple, dict[str, Any]] = {}
    for r in runs:
        key = tuple(_label(r.config.get(k)) for k in by)
        row = rows.setdefault(key, {**dict(zip(by, key)), "n": 0, "failed": 0, "_values": {m: [] for m in metrics}, "_raw": {k: r.config.get(k) for k in by}})
        if r.status == "completed":
            row["n"] += 1
            for m in metrics:
                if m in r.metrics:
                    row["_values"][m].append(r.metrics[m])
        else:
            row["failed"] += 1
    table = []
    for row in rows.values():
        values = row.pop("_values")
        row.pop("_raw")
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
        rows.append({"run": r.name, "source": r.source, "status": r.status, **{k: r.config.get(k) for k in by}, "seed": r.config.get("seed"), **{m: r.metrics.get(m) for m in metrics}, "reason": r.reason})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Writing


def markdown(table: pd.DataFrame, by: list[str], metrics: list[str], bad: list[Run]) -> str:
    head = [*by, "n", *metrics] + (["failed"] if bad else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in by] + [str(row["n"])] + [fmt(row[f"{m} mean"], row[f"{m} std"], row[f"{m} n"]) for m in metrics]
        if bad:
            cells.append(str(row["failed"]))
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
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in by] + [str(row["n"])] + [fmt(row[f"{m} mean"], row[f"{m} std"], row[f"{m} n"]) for m in metrics]
        t.add_row(*cells, *([str(row["failed"])] if bad else []))
    console = Console(width=max(100, 22 * (len(by) + len(metrics))))
    console.print(t)
    for r in bad:
        console.print(f"[red]{r.status}[/red] {r.name}: {r.reason}")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")


def plot_metrics(table: pd.DataFrame, by: list[str], metrics: list[str], x: str | None, out: Path) -> list[Path]:
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
        fig.tight_layout()
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


def plot_curves(runs: list[Run], by: list[str], curves: list[str], out: Path) -> list[Path]:
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
                label = ", ".join(f"{k}={_label(r.config.get(k))}" for k in by) or "all runs"
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
        fig.tight_layout()
        name = f"curve_{_slug(c)}.png"
        fig.savefig(out / name)
        plt.close(fig)
        paths.append(out / name)
    return paths


def compare(inputs: list[str], by: list[str] | None = None, metrics: list[str] | None = None, out: Path | None = None,
            x: str | None = None, curves: list[str] | None = None, plots: bool = True, quiet: bool = False) -> dict[str, Any]:
    """Read, aggregate and write; returns the table, the runs and the written files."""
    runs = collect(inputs)
    by = list(by) if by else varying_keys(runs)
    by = check_keys(runs, by)
    if x is not None and x not in by:
        raise UserError("--x", x, f"must be one of the --by keys {by}")
    metrics = choose_metrics(runs, list(metrics or []))
    table = aggregate(runs, by, metrics)
    bad = [r for r in runs if r.status != "completed"]
    if out is None:
        first = Path(inputs[0])
        out = first / "compare" if len(inputs) == 1 and first.is_dir() else Path("compare")
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "compare.csv", out / "runs.csv", out / "compare.md"]
    table.to_csv(files[0], index=False)
    runs_frame(runs, by, metrics).to_csv(files[1], index=False)
    files[2].write_text(markdown(table, by, metrics, bad))
    if plots:
        files += plot_metrics(table, by, metrics, x, out)
        files += plot_curves(runs, by, list(curves) if curves is not None else list(CURVES), out)
    if not quiet:
        print_table(table, by, metrics, bad)
        print(f"wrote {len(files)} files to {out}")
    return {"table": table, "runs": runs, "by": by, "metrics": metrics, "files": files, "out": out}


def _split(values: list[str] | None) -> list[str]:
    return [v for item in values or [] for v in item.split(",") if v]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="assay-compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="a sweep directory, run directories, wandb run directories, or a wandb project (entity/project or wandb:entity/project)")
    p.add_argument("--by", action="append", help="config keys to group on, comma-separated (default: every key that varies, except seeds)")
    p.add_argument("--metric", action="append", help="summary metrics to report, comma-separated (default: the headline test metrics and any selection/* detection metrics)")
    p.add_argument("--x", help="the --by key on the x axis of the metric plots (default: the last numeric --by key)")
    p.add_argument("--curve", action="append", help=f"metrics.csv columns to draw as learning curves, wildcards allowed (mixing/weight/*: an online mixer's domain weights; default: {','.join(CURVES)})")
    p.add_argument("--out", type=Path, help="where to write compare.csv, runs.csv, compare.md and the PNGs (default: <sweep>/compare)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    try:
        compare(args.runs, _split(args.by) or None, _split(args.metric), args.out, args.x, _split(args.curve) or None, not args.no_plots)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
