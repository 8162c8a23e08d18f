"""Sweeps that train: the Optuna search with a resumable SQLite study and the local-parallel launcher
(the definitions themselves: tests/config/test_sweep_definitions.py)."""

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.conftest import HEAD, run_assay

REPO = Path(__file__).resolve().parents[2]
TRAIN = str(Path(sys.executable).parent / "assay-train")


def _run(args, tmp_path, **env):
    env = {**os.environ, "ASSAY_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **env}
    return run_assay(args, tmp_path, launcher=[TRAIN], env=env)


@pytest.mark.integration
@pytest.mark.cli
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
@pytest.mark.cli
def test_local_parallel_launcher_runs_jobs_side_by_side(tmp_path):
    sweep = tmp_path / "sweep"
    r = _run(["-m", "hydra/launcher=local_parallel", "debug=fast", "trainer.max_steps=1", "logger=csv", "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (sweep / "0" / "summary.json").is_file() and (sweep / "1" / "summary.json").is_file()
    for job in ("0", "1"):  # a sweep job records the code it ran, and the command of the sweep
        origin = json.loads((sweep / job / "summary.json").read_text())["provenance"]
        assert origin["code"]["commit"] == HEAD and origin["versions"]["torch"]
