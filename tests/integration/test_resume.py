"""Resuming after a hard kill: same final metrics as an uninterrupted run, no duplicated or missing
per-sample records or metric rows, and a refusal to resume on a different data order."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from assay.dynamics.store import read_gradients, read_store
from tests.conftest import without_speed

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TRAIN = str(Path(sys.executable).parent / "assay-train")
# 12 steps inside epoch 0 (120 training examples / batch 8 = 15 batches), a checkpoint after every
# step, so the kill lands mid-epoch between two checkpoints. Gradient dynamics every other step
# exercise the gradient store's resume too (recording them must not change training).
ARGS = [
    "debug=fast", "logger=csv", "trainer.max_steps=12", "checkpoint_every_n_steps=1", "trainer.val_check_interval=4",
    "dynamics=gradients", "dynamics.grad_every_n_steps=2", "dynamics.proj_dim=64",
]


def _env(tmp_path):
    env = dict(os.environ, ASSAY_CACHE=str(tmp_path / "cache"), WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    env.pop("SLURM_RESTART_COUNT", None)
    return env


def _train(run_dir, env, *extra, **kw):
    return subprocess.run([TRAIN, *ARGS, f"hydra.run.dir={run_dir}", *extra], env=env, capture_output=True, text=True, cwd=REPO, timeout=600, **kw)


def _killed_at(run_dir: Path, env, min_step: int) -> int:
    """Start a run, SIGKILL it once the store holds records of step >= min_step; return that step."""
    proc = subprocess.Popen([TRAIN, *ARGS, f"hydra.run.dir={run_dir}"], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            parts = sorted((run_dir / "dynamics").glob("part-*.parquet"))
            last = max((int(p.stem.split("-")[2]) for p in parts), default=-1)
            if last >= min_step:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return last
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc={proc.returncode}) before it could be killed")
            time.sleep(0.05)
        pytest.fail("the run never reached the kill point")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.cli
def test_killed_run_resumes_to_the_same_result(tmp_path):
    env = _env(tmp_path)
    straight = tmp_path / "straight"
    r = _train(straight, env)
    assert r.returncode == 0, r.stderr[-2000:]

    killed = tmp_path / "killed"
    _killed_at(killed, env, min_step=5)
    assert not (killed / "summary.json").exists()  # a killed run has no summary
    ckpt = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    # the store is flushed just before a checkpoint is written, so the kill may land between the two
    assert 4 <= ckpt["global_step"] < 12, ckpt["global_step"]
    assert {"assay_rng", "optimizer_states", "lr_schedulers", "AssayDataModule"} <= set(ckpt)

    earlier = pd.read_csv(killed / "metrics.csv")
    assert len(earlier) and earlier["step"].max() >= 3  # the killed run's metric history so far (rows are labelled with the steps done before the batch)

    # One command: the run's own overrides, its directory, its last.ckpt.
    r = subprocess.run([TRAIN, f"resume={killed}"], env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stdout
    a = json.loads((straight / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert b["global_step"] == a["global_step"] == 12
    assert b["resumed_from"] == str(killed / "checkpoints" / "last.ckpt") and b["run_dir"] == str(killed)
    assert b["data"]["data_order_fingerprint"] == a["data"]["data_order_fingerprint"]
    # Bitwise on CPU with the same seed: model, optimizer, scheduler, RNG and sampler all restored.
    assert without_speed(b["metrics"]) == without_speed(a["metrics"])  # all but the wall-clock speed/... ones
    # The metric history survives the resume: every row of the uninterrupted run, none twice.
    ma, mb = (without_speed(pd.read_csv(run / "metrics.csv")) for run in (straight, killed))
    assert list(mb.columns) == list(ma.columns)
    pd.testing.assert_frame_equal(mb, ma)

    sa, sb = read_store(straight / "dynamics"), read_store(killed / "dynamics")
    assert not sb.duplicated(["id", "step"]).any()
    assert len(sb) == len(sa) == 12 * 8
    assert sb[["id", "step"]].equals(sa[["id", "step"]])
    assert (sb["loss"] - sa["loss"]).abs().max() == 0.0

    ga, gb = read_gradients(straight / "dynamics" / "gradients"), read_gradients(killed / "dynamics" / "gradients")
    assert not gb.index.duplicated(["id", "step"]).any()
    assert len(gb) == len(ga) == 6 * 8
    assert gb.index[["id", "step"]].equals(ga.index[["id", "step"]])
    assert (gb.features() == ga.features()).all() and (gb.index["grad_norm"] == ga.index["grad_norm"]).all()


@pytest.mark.cli
def test_resume_refuses_a_different_data_order(tmp_path):
    env = _env(tmp_path)
    run_dir = tmp_path / "run"
    r = _train(run_dir, env, "trainer.max_steps=2")
    assert r.returncode == 0, r.stderr[-2000:]
    # Continuing a checkpoint in a new run directory: the data order is checked against the checkpoint's.
    r = _train(tmp_path / "continued", env, f"ckpt_path={run_dir}/checkpoints/last.ckpt", "ordering.seed=7")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "different data order" in r.stderr and "allow_order_change" in r.stderr
