"""Run directories end to end: runs and sweeps that start together get their own directories, and a
refused resume leaves the run directory exactly as it was."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import without_speed

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TRAIN = str(Path(sys.executable).parent / "assay-train")
QUICK = ["debug=fast", "logger=csv", "trainer.max_steps=2", "trainer.val_check_interval=2", "eval.val_generate=false"]


def _env(tmp_path):
    env = dict(os.environ, ASSAY_CACHE=str(tmp_path / "cache"), WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("SLURM_RESTART_COUNT", None)
    return env


@pytest.mark.cli
def test_runs_and_sweeps_started_together_get_their_own_directories(tmp_path):
    """Both runs name the same directory (as the default name does within one second): the second
    one gets ``<name>_1``, and each job of a sweep stays inside its own sweep's directory."""
    env = _env(tmp_path)
    same = "${assay.unique:" + str(tmp_path / "logs" / "same-second") + "}"
    sweeps = "${assay.unique:" + str(tmp_path / "logs" / "same-sweep") + "}"
    procs = [
        subprocess.Popen([TRAIN, *QUICK, f"seed={s}", f"hydra.run.dir={same}"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in (0, 1)
    ] + [
        subprocess.Popen([TRAIN, "-m", *QUICK, f"seed={s},{s + 10}", f"hydra.sweep.dir={sweeps}"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in (0, 1)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]

    runs = sorted((tmp_path / "logs").glob("same-second*"))
    assert [r.name for r in runs] == ["same-second", "same-second_1"]
    seeds = sorted(json.loads((r / "summary.json").read_text())["run_dir"] == str(r) and _seed(r) for r in runs)
    assert seeds == [0, 1]  # each directory holds one run's config and summary
    for r in runs:
        assert sorted(p.name for p in (r / "checkpoints").iterdir()) == ["last.ckpt"]

    sweep_dirs = sorted((tmp_path / "logs").glob("same-sweep*"))
    assert [s.name for s in sweep_dirs] == ["same-sweep", "same-sweep_1"]  # no job claimed a third
    got = []
    for s in sweep_dirs:
        jobs = sorted(p.name for p in s.iterdir() if p.is_dir() and not p.name.startswith("."))
        assert jobs == ["0", "1"], jobs
        got.append(sorted(_seed(s / j) for j in jobs))
    assert sorted(got) == [[0, 10], [1, 11]]


def _seed(run: Path) -> int:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["seed"]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) with its content hash and modification time."""
    return {
        str(p.relative_to(root)): f"{hashlib.sha256(p.read_bytes()).hexdigest()}@{p.stat().st_mtime_ns}"
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _one_line_error(r, *fragments):
    err = r.stderr.strip()
    assert r.returncode == 2, r.stderr[-3000:]
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err


@pytest.mark.cli
def test_refused_resume_leaves_the_run_directory_untouched(tmp_path):
    env = _env(tmp_path)
    run = tmp_path / "run"
    r = subprocess.run([TRAIN, *QUICK, "checkpoint_every_n_steps=1", f"hydra.run.dir={run}"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (run / "summary.json").unlink()  # as if it had been killed after its last checkpoint
    before = _snapshot(run)
    assert ".hydra/config.yaml" in before and "metrics.csv" in before and "config.yaml" in before

    def train(*args):
        return subprocess.run([TRAIN, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    # A different learning rate (or seed, or anything else) is not a resumption of this run.
    _one_line_error(train(f"resume={run}", "optim.lr=0.01"), f"resume='{run}'", "optim.lr (saved 0.001, now 0.01)")
    _one_line_error(train(f"resume={run}", "seed=3", "ordering=sequential"), "ordering.name", "seed (saved 0, now 3)")
    # The spelled-out form gets the same check.
    _one_line_error(train(*QUICK, "checkpoint_every_n_steps=1", "optim.lr=0.01", f"hydra.run.dir={run}", "ckpt_path=last"), "ckpt_path='last'", "optim.lr")
    assert _snapshot(run) == before

    # ckpt_path=last in a new run directory would start fresh: it says so instead.
    _one_line_error(train(*QUICK, "ckpt_path=last"), "ckpt_path='last'", "resume=<run dir>")
    assert not (tmp_path / "logs").exists()
    _one_line_error(train("resume=" + str(tmp_path / "nope")), "not a run directory")
    _one_line_error(train("-m", f"resume={run}"), "does not combine with -m")

    # The same config resumes, in place; a completed run is not resumed again.
    r = train(f"resume={run}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["run"]  # no other run directory
    _one_line_error(train(f"resume={run}"), "already completed")


@pytest.mark.cli
def test_a_run_directory_is_never_overwritten_shared_or_mixed(tmp_path):
    """A new run into a directory holding a run (completed or killed) is refused before anything is
    written; a live run's directory is locked; a dead run's stale lock is taken over; a resume that
    finds no checkpoint sets the earlier attempt aside instead of mixing it in."""
    env = _env(tmp_path)

    def train(*args):
        return subprocess.run([TRAIN, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    done = tmp_path / "done"
    r = train(*QUICK, f"hydra.run.dir={done}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (done / "run.lock").exists()  # released at the end
    before = _snapshot(done)
    _one_line_error(train(*QUICK, "optim.lr=0.01", f"hydra.run.dir={done}"), f"hydra.run.dir='{done}'", "holds a completed run", "never overwritten")
    _one_line_error(train(*QUICK, f"hydra.run.dir={done}", "ckpt_path=last"), "holds a completed run")
    _one_line_error(train("-m", *QUICK, f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=done"), "holds a completed run")
    after = _snapshot(done)
    # the sweep's job reached its directory (Hydra writes .hydra/ there first); nothing of the run changed
    assert {k: v for k, v in after.items() if not k.startswith(".hydra/")} == {k: v for k, v in before.items() if not k.startswith(".hydra/")}

    killed = tmp_path / "killed"
    r = train(*QUICK, "checkpoint_every_n_steps=1", f"hydra.run.dir={killed}")
    assert r.returncode == 0, r.stderr[-3000:]
    (killed / "summary.json").unlink()  # as if killed after its last checkpoint
    before = _snapshot(killed)
    _one_line_error(train(*QUICK, "checkpoint_every_n_steps=1", f"hydra.run.dir={killed}"), "did not finish", f"resume={killed}")
    assert _snapshot(killed) == before

    # a live run holds a lock: here this test process stands in for it
    import socket

    (killed / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "process_start": None}))
    before = _snapshot(killed)
    _one_line_error(train(f"resume={killed}"), "is in use by a live run", f"pid {os.getpid()}")
    assert _snapshot(killed) == before
    # the same lock left by a process that is gone is stale: the resume takes it over and completes
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (killed / "run.lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "process_start": "0"}))
    r = train(f"resume={killed}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((killed / "summary.json").read_text())["status"] == "completed" and not (killed / "run.lock").exists()

    # killed before its first checkpoint: a resume starts from step 0 with the earlier files set aside
    early = tmp_path / "early"
    r = train(*QUICK, f"hydra.run.dir={early}")
    assert r.returncode == 0, r.stderr[-3000:]
    (early / "summary.json").unlink()
    shutil_rows = (early / "metrics.csv").read_text()
    for ckpt in (early / "checkpoints").glob("*"):
        ckpt.unlink()
    r = train(*QUICK, f"hydra.run.dir={early}", "ckpt_path=last")
    assert r.returncode == 0, r.stderr[-3000:]
    (aside,) = (early / "superseded").iterdir()
    assert (aside / "metrics.csv").read_text() == shutil_rows and (aside / "config.yaml").is_file()
    # the same run again, from step 0, not appended to the old rows (the same values but the wall-clock speed/... ones)
    again, first = (without_speed(pd.read_csv(f)) for f in (early / "metrics.csv", aside / "metrics.csv"))
    pd.testing.assert_frame_equal(again, first)


@pytest.mark.cli
@pytest.mark.parametrize("phase", ["selecting the training data", "testing"])
def test_sigterm_outside_a_training_batch_stops_the_run_interrupted_and_it_resumes(tmp_path, phase):
    """A signal in any phase ends the run there (fault injection sends SIGTERM as the phase starts):
    one line naming the phase, status interrupted, no summary; `resume=` then completes it."""
    env = {**_env(tmp_path), "ASSAY_FAULT_SIGNAL_AT_PHASE": phase}
    run = tmp_path / "run"
    r = subprocess.run([TRAIN, *QUICK, "checkpoint_every_n_steps=1", f"hydra.run.dir={run}"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    _one_line_error(r, f"stopped by SIGTERM while {phase}", f"resume={run}")
    assert json.loads((run / "failure.json").read_text())["status"] == "interrupted" and not (run / "summary.json").exists()
    r = subprocess.run([TRAIN, f"resume={run}"], env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed" and not (run / "failure.json").exists()
