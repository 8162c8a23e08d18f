"""Bad input to mixture search: one line naming the field, the value and what is allowed (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assay.errors import UserError
from assay.mixsearch.fit import fit_report
from assay.mixsearch.mixture import MixtureSpec
from assay.mixsearch.swarm import Swarm, make_proxies
from assay.mixsearch.table import load_table

DOMAINS = ["copy", "add", "sort"]


def _fake_swarm(root: Path, n: int, failed=(), missing=(), drop_metric=()) -> Swarm:
    """A swarm directory whose runs are written by hand (no training): completed, failed (a run dir
    without summary), missing (never started), or completed without the target metric."""
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), n)
    swarm = Swarm(root, DOMAINS, make_proxies(X, DOMAINS), MixtureSpec(), [], prior={d: 1 / 3 for d in DOMAINS}, sizes={d: 100.0 for d in DOMAINS}).write()
    t = np.array([2.0, 3.0, 2.5])
    for p, x in zip(swarm.proxies, X):
        if p.id in missing:
            continue
        d = swarm.run_dir(p.id)
        d.mkdir(parents=True)
        if p.id in failed:
            continue
        metrics = {"val/loss": float(x @ t)} | {f"val/loss/{k}": float(v) for k, v in zip(DOMAINS, t * (1 - x))}
        if p.id in drop_metric:
            metrics.pop("val/loss")
        (d / "summary.json").write_text(json.dumps({"status": "completed", "metrics": metrics, "global_step": 10}))
    return swarm


def test_failed_and_missing_proxies_are_listed_excluded_and_counted(tmp_path):
    _fake_swarm(tmp_path / "s", 10, failed=("p001", "p004"), missing=("p009",))
    lines = []
    table = load_table(tmp_path / "s", target="val/loss", echo=lines.append)
    assert len(table.y) == 7
    assert lines == ["[assay-mix] excluding 3 of 10 proxies (failed: p001, p004; missing: p009); fitting on the 7 that completed"]
    fit_report(table, ["linear"], echo=lambda s: None)  # still fits on what remains


def test_metric_missing_from_some_runs(tmp_path):
    _fake_swarm(tmp_path / "s", 8, drop_metric=("p002", "p005"))
    with pytest.raises(UserError, match=r"--target='val/loss': missing \(or not finite\) in 2 of 8 completed runs \(p002, p005\)"):
        load_table(tmp_path / "s", target="val/loss")
    lines = []
    table = load_table(tmp_path / "s", target="val/loss", drop_missing=True, echo=lines.append)
    assert len(table.y) == 6 and "excluded" in lines[0]


def test_per_domain_target_average(tmp_path):
    _fake_swarm(tmp_path / "s", 5)
    table = load_table(tmp_path / "s", target="val/loss/*", target_weights="{add:1}")
    assert np.allclose(table.y, 3.0 * (1 - table.X[:, 1]))


def test_table_weights_not_summing_to_one(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("w/copy,w/add,loss\n0.5,0.5,2.0\n0.7,0.5,2.1\n0.2,0.8,1.9\n")
    with pytest.raises(UserError, match=r"t.csv row 1=1.2: weight columns must sum to 1 \(±0.001\); 1 of 3 rows do not"):
        load_table(path, target="loss")


def test_table_unknown_domain(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("copy,add,loss\n0.5,0.5,2.0\n0.3,0.7,2.1\n")
    with pytest.raises(UserError, match=r"--domains='sort': unknown domain: no column 'sort' or 'w/sort'"):
        load_table(path, domains="copy,sort", target="loss")
    path.write_text("w/copy,w/add,w/zzz,loss\n0.5,0.5,0,2.0\n0.3,0.7,0,2.1\n")
    with pytest.raises(UserError, match=r"t.csv column='w/zzz': names a domain not in --domains"):
        load_table(path, domains="copy,add", target="loss")


def test_table_parquet_and_missing_target(tmp_path):
    import pandas as pd

    path = tmp_path / "t.parquet"
    pd.DataFrame({"w/a": [0.5, 0.2], "w/b": [0.5, 0.8], "loss": [1.0, 2.0]}).to_parquet(path)
    assert load_table(path, target="loss").domains == ["a", "b"]
    with pytest.raises(UserError, match=r"--target='acc': not a column of t.parquet"):
        load_table(path, target="acc")


def test_too_few_proxies_for_a_regressor(tmp_path):
    _fake_swarm(tmp_path / "s", 6)
    table = load_table(tmp_path / "s", target="val/loss")
    with pytest.raises(UserError, match=r"--regressor='autoscale': needs at least 11 proxies for 3 domains \(10 parameters\) to fit with 1 held out, so a table of at least 12 rows; the table has 6"):
        fit_report(table, ["linear", "autoscale"], echo=lambda s: None)


@pytest.mark.cli
def test_cli_prints_one_line_and_exits_2(tmp_path):
    _fake_swarm(tmp_path / "s", 6)
    proc = subprocess.run([sys.executable, "-m", "assay.mixsearch.cli", "propose", str(tmp_path / "s"), "--regressor", "linear", "--caps", "{copy:0.2,add:0.3,sort:0.4}"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: caps='copy<=0.2, add<=0.3, sort<=0.4': infeasible: the caps sum to 0.9 < 1, so every cap binds; raise max_repetition, add data, or lower the budget"]
    proc = subprocess.run([sys.executable, "-m", "assay.mixsearch.cli", "fit", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "must be a swarm directory" in proc.stderr


@pytest.mark.cli
def test_cli_fit_and_propose_write_their_files(tmp_path):
    root = tmp_path / "s"
    _fake_swarm(root, 24, failed=("p003",))
    cmd = [sys.executable, "-m", "assay.mixsearch.cli"]
    fit = subprocess.run([*cmd, "fit", str(root), "--regressor", "linear,log_linear,lightgbm"], capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert "excluding 1 of 24 proxies (failed: p003)" in fit.stdout
    table = (root / "fit" / "fit.md").read_text()
    assert "23 proxies, 3 domains" in table and "| linear | 1.000 | 1.000 ± 0.000 (5 folds) | 1.000 |" in table  # the fake target is exactly linear
    assert (root / "fit" / "pred_vs_true.png").is_file()
    # val/loss = 2 copy + 3 add + 2.5 sort: the best mixture within caps fills copy (t = 2) up to its cap
    prop = subprocess.run([*cmd, "propose", str(root), "--regressor", "linear", "--proposer", "optimize", "--caps", "{copy:0.6}"], capture_output=True, text=True)
    assert prop.returncode == 0, prop.stderr[-2000:]
    out = json.loads((root / "proposed" / "linear.json").read_text())
    assert out["weights"] == pytest.approx({"copy": 0.6, "add": 0.0, "sort": 0.4}, abs=1e-4)
    assert out["binding_caps"] == ["copy<=0.6"]
    assert "assay-train mixture=weights mixture.weights={copy:0.6,sort:0.4}" in prop.stdout
