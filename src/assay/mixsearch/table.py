"""The table every fit reads: one row per proxy run, its mixture, its data quantity and the target.

It comes from a swarm directory (each run's ``summary.json`` and config) or from a CSV/Parquet file
of any other origin (RegMix's ``train_mixture_1m.csv`` + losses, say) whose weight columns are named
``w/<domain>`` or listed with ``--domains``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from assay.errors import UserError, check
from assay.mixsearch.mixture import SUM_TOL, MixtureSpec, normalise, parse_mixture

MIN_ROWS = 2


@dataclass
class Table:
    domains: list[str]
    X: np.ndarray
    """(n, m) mixture weights, rows sum to one."""
    y: np.ndarray
    """(n,) the target metric."""
    ids: list[str]
    target_name: str
    scale: Optional[np.ndarray] = None
    """(n,) data quantity of each run (examples seen); None when unknown."""
    maximize: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    spec: MixtureSpec = field(default_factory=MixtureSpec)

    def to_frame(self):
        import pandas as pd

        df = pd.DataFrame(self.X, columns=[f"w/{d}" for d in self.domains])
        df.insert(0, "id", self.ids)
        if self.scale is not None:
            df["scale"] = self.scale
        df[self.target_name] = self.y
        return df


def target_value(metrics: Mapping[str, Any], target: str, weights: Optional[Mapping[str, float]], domains: list[str]) -> Optional[float]:
    """A plain metric, or ``prefix/*``: the weighted mean of ``prefix/<domain>`` (equal weights by default)."""
    if target.endswith("/*"):
        prefix = target[:-1]
        w = weights or {d: 1.0 for d in domains}
        vals = [(float(w[d]), metrics.get(prefix + d)) for d in w]
        if any(v is None for _, v in vals):
            return None
        return sum(a * float(v) for a, v in vals) / sum(a for a, _ in vals)
    v = metrics.get(target)
    return None if v is None else float(v)


def load_table(
    source: str | Path, domains: Optional[str] = None, target: str = "val/loss", target_weights: Optional[str] = None,
    scale_column: Optional[str] = None, maximize: bool = False, drop_missing: bool = False, echo: Callable[[str], None] = print,
) -> Table:
    path = Path(source)
    tw = normalise(parse_mixture(target_weights, "--target-weights"), "--target-weights") if target_weights else None
    if path.is_dir():
        table = _from_swarm(path, target, tw, drop_missing, echo)
    elif path.is_file() and path.suffix in (".csv", ".parquet", ".pq"):
        table = _from_file(path, domains, target, tw, scale_column)
    else:
        raise UserError("source", str(source), "must be a swarm directory (with swarm.json) or a .csv/.parquet table")
    if tw:
        unknown = sorted(set(tw) - set(table.domains))
        check(not unknown, "--target-weights", ",".join(unknown), f"unknown domain; domains are {table.domains}")
    table.maximize = maximize
    return table


def _from_swarm(root: Path, target: str, tw, drop_missing: bool, echo) -> Table:
    from assay.mixsearch.swarm import Swarm

    swarm = Swarm.load(root)
    status = swarm.status()
    # "failed" is a run directory without a summary: a run that crashed, or one still running
    bad = {s: [pid for pid, st in status.items() if st == s] for s in ("failed", "missing")}
    n_bad = sum(len(v) for v in bad.values())
    if n_bad:
        parts = [f"{s}: {', '.join(v[:8])}{' …' if len(v) > 8 else ''}" for s, v in bad.items() if v]
        echo(f"[assay-mix] excluding {n_bad} of {len(status)} proxies ({'; '.join(parts)}); fitting on the {len(status) - n_bad} that completed")
    rows, missing_metric = [], []
    for p in swarm.proxies:
        if status[p.id] != "completed":
            continue
        summary = json.loads((swarm.run_dir(p.id) / "summary.json").read_text())
        value = target_value(summary.get("metrics", {}), target, tw, swarm.domains)
        if value is None or not math.isfinite(value):
            missing_metric.append(p.id)
            continue
        rows.append((p, value, _scale_of(swarm.run_dir(p.id), summary)))
    if missing_metric:
        msg = f"missing (or not finite) in {len(missing_metric)} of {len(missing_metric) + len(rows)} completed runs ({', '.join(missing_metric[:6])}{' …' if len(missing_metric) > 6 else ''})"
        if not drop_missing or not rows:
            example = _metric_names(swarm.run_dir(rows[0][0].id) if rows else swarm.run_dir(missing_metric[0]))
            raise UserError("--target", target, msg + f"; metrics these runs have include {example}")
        echo(f"[assay-mix] target {target!r} {msg}; excluded")
    check(len(rows) >= MIN_ROWS, "swarm", str(root), f"only {len(rows)} completed proxies with the target; need at least {MIN_ROWS}")
    X = np.array([[float(p.weights.get(d, 0.0)) for d in swarm.domains] for p, _, _ in rows])
    X = X / X.sum(axis=1, keepdims=True)
    scales = [s for _, _, s in rows]
    scale = np.array(scales, dtype=float) if all(s is not None for s in scales) else None
    meta = {"sizes": swarm.sizes, "prior": swarm.prior, "caps": swarm.caps, "root": str(root), "generator": swarm.generator}
    return Table(swarm.domains, X, np.array([v for _, v, _ in rows]), [p.id for p, _, _ in rows], target, scale, meta=meta, spec=swarm.spec)


def _scale_of(run_dir: Path, summary: dict) -> Optional[float]:
    """Examples seen by the run: steps × batch size × gradient accumulation."""
    from omegaconf import OmegaConf

    cfg_path = run_dir / "config.yaml"
    steps = summary.get("global_step")
    if steps is None or not cfg_path.is_file():
        return None
    cfg = OmegaConf.load(cfg_path)
    batch = OmegaConf.select(cfg, "data.batch_size", default=None)
    accum = OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1) or 1
    return None if batch is None else float(steps) * float(batch) * float(accum)


def _metric_names(run_dir: Path) -> list[str]:
    try:
        names = sorted(json.loads((run_dir / "summary.json").read_text())["metrics"])
    except (OSError, KeyError, json.JSONDecodeError):
        return []
    return [n for n in names if n.count("/") <= 1][:10]


def _numeric(df, columns: list[str], path: Path) -> np.ndarray:
    """The columns as floats; a cell that is not a number is one line naming its column and row."""
    import pandas as pd

    for c in columns:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero(values.isna() & df[c].notna())
        if bad.size:
            raise UserError(f"{path.name} column {c}", df[c].iloc[int(bad[0])], f"is not a number (row {int(bad[0])}, and {bad.size - 1} more)")
    return df[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)


def _from_file(path: Path, domains: Optional[str], target: str, tw, scale_column: Optional[str]) -> Table:
    import pandas as pd

    try:
        df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise UserError("source", str(path), "is empty: a table needs a header and one row per proxy run") from None
    check(len(df) > 0, "source", str(path), "has a header but no rows: a table needs one row per proxy run")
    cols = list(df.columns)
    prefixed = [c[2:] for c in cols if str(c).startswith("w/")]
    if domains:
        names = [d.strip() for d in domains.split(",") if d.strip()]
        colnames = []
        for d in names:
            if f"w/{d}" in cols:
                colnames.append(f"w/{d}")
            elif d in cols:
                colnames.append(d)
            else:
                raise UserError("--domains", d, f"unknown domain: no column '{d}' or 'w/{d}' in {path.name}; columns are {cols[:20]}")
        extra = sorted(set(prefixed) - set(names))
        check(not extra, f"{path.name} column", f"w/{extra[0]}" if extra else "", f"names a domain not in --domains {names}")
    else:
        check(bool(prefixed), "--domains", None, f"{path.name} has no w/<domain> columns; list the weight columns with --domains")
        names, colnames = prefixed, [f"w/{d}" for d in prefixed]
    X = _numeric(df, colnames, path)
    if not np.isfinite(X).all() or (X < 0).any():
        i = int(np.flatnonzero(~(np.isfinite(X) & (X >= 0)).all(axis=1))[0])
        raise UserError(f"{path.name} row {i}", X[i].tolist(), "weights must be finite and >= 0")
    sums = X.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1) > SUM_TOL)
    if off.size:
        i = int(off[0])
        raise UserError(f"{path.name} row {i}", round(float(sums[i]), 6), f"weight columns must sum to 1 (±{SUM_TOL}); {off.size} of {len(sums)} rows do not")
    X = X / sums[:, None]
    if target.endswith("/*"):
        prefix = target[:-1]
        w = tw or {d: 1.0 for d in names}
        need = [prefix + d for d in w]
        absent = [c for c in need if c not in cols]
        check(not absent, "--target", target, f"column {absent[0] if absent else ''!r} is not in {path.name}")
        y = sum(float(w[d]) * _numeric(df, [prefix + d], path)[:, 0] for d in w) / sum(w.values())
    else:
        check(target in cols, "--target", target, f"not a column of {path.name}; columns are {cols[:20]}")
        y = _numeric(df, [target], path)[:, 0]
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise UserError("--target", target, f"missing in {bad.size} of {len(y)} rows (first: row {int(bad[0])})")
    scale = None
    if scale_column:
        check(scale_column in cols, "--scale-column", scale_column, f"not a column of {path.name}")
        scale = df[scale_column].to_numpy(dtype=float)
    elif "scale" in cols:
        scale = df["scale"].to_numpy(dtype=float)
    ids = [str(v) for v in df["id"]] if "id" in cols else [str(i) for i in range(len(df))]
    check(len(y) >= MIN_ROWS, "source", str(path), f"has {len(y)} rows; need at least {MIN_ROWS}")
    return Table(names, X, np.asarray(y, dtype=float), ids, target, scale, meta={"root": str(path)})
