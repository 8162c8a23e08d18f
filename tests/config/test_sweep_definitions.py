"""Sweep definitions (sweep=<name>) expand and validate, the command line wins over a definition, and a
bad sweep is one line before any job runs."""

import os
import sys
from pathlib import Path

import pytest

from assay.paths import CONF_DIR
from assay.run.preflight import preflight
from tests.conftest import run_assay

TRAIN = str(Path(sys.executable).parent / "assay-train")
SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))


def _run(args, tmp_path):
    env = {**os.environ, "ASSAY_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return run_assay(args, tmp_path, launcher=[TRAIN], env=env)


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
@pytest.mark.cli
def test_bad_sweep_is_one_line_before_any_job_runs(args, expected, tmp_path):
    r = _run(["-m", *args], tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip()
    assert err.startswith("error: ") and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "logs" / "train" / "multirun").exists()
