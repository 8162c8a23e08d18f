"""Sweep definitions (sweep=<name>), the Optuna search with a resumable SQLite study, and the
local-parallel launcher."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from assay.paths import CONF_DIR
from assay.run.preflight import preflight
from tests.conftest import HEAD

REPO = Path(__file__).resolve().parents[2]
TRAIN = str(Path(sys.executable).parent / "assay-train")
SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))


def _run(args, tmp_path, **env):
    env = {**os.environ, "ASSAY_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **env}
    return subprocess.run([TRAIN, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_definition_expands_and_validates(name):
    assert preflight(["-m", f"sweep={name}"]) >= 2


def test_sweep_grid_comes_from_the_definition_and_the_command_line_wins():
    assert preflight(["-m", "sweep=smoke"]) == 4  # 2 learning rates x 2 seeds
    assert preflight(["-m", "sweep=smoke", "seed=5"]) == 2
    assert preflight(["-m", "sweep=smoke", "optim.lr=1e-4,1e-3,1e-2"]) == 6


@pytest.mark.parametrize(
    "args, expected",
    [
        (["sweep=nope"], "sweep='nope': unknown option; choose one of"),
        (["sweep=smoke", "optim.lrr=1,2"], "optim.lrr: unknown key"),
        (["sweep=noisy_prefs", "noise.p=0.1,0.7"], "noise.p=0.7: must be in [0, 0.5)"),
        (["hydra/sweeper=optuna_sqlite", "optim.lrr=interval(0.1,0.2)"], "optim.lrr: unknown key"),
        (["hydra/sweeper=optuna_sqlite", "noise=pairwise_flip", "noise.p=interval(0.1,0.7)"], "noise.p=0.7: must be in [0, 0.5)"),
    ],
)
def test_bad_sweep_is_one_line_before_any_job_runs(args, expected, tmp_path):
    r = _run(["-m", *args], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip()
    assert err.startswith("error: ") and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "logs" / "train" / "multirun").exists()


@pytest.mark.integration
def test_optuna_study_in_sqlite_resumes_across_invocations(tmp_path):
    args = ["-m", "hydra/sweeper=optuna_sqlite", "optim.lr=tag(log,interval(1e-4,1e-2))", "hydra.sweeper.n_trials=1",
            "debug=fast", "trainer.max_steps=1", "logger=none", f"paths.log_dir={tmp_path / 'logs'}"]
    for _ in range(2):
        r = _run(args, tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
    db = tmp_path / "logs" / "train" / "optuna.sqlite3"
    with sqlite3.connect(db) as con:
        studies = con.execute("select study_name from studies").fetchall()
        trials = con.execute("select state from trials").fetchall()
    assert studies == [("train",)]
    assert [s for (s,) in trials] == ["COMPLETE", "COMPLETE"]  # the second run added to the same study
    assert len(list((tmp_path / "logs" / "train" / "multirun").glob("*/optimization_results.yaml"))) == 2


@pytest.mark.integration
def test_local_parallel_launcher_runs_jobs_side_by_side(tmp_path):
    sweep = tmp_path / "sweep"
    r = _run(["-m", "hydra/launcher=local_parallel", "debug=fast", "trainer.max_steps=1", "logger=csv", "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (sweep / "0" / "summary.json").is_file() and (sweep / "1" / "summary.json").is_file()
    for job in ("0", "1"):  # a sweep job records the code it ran, and the command of the sweep
        origin = json.loads((sweep / job / "summary.json").read_text())["provenance"]
        assert origin["code"]["commit"] == HEAD and origin["versions"]["torch"]
