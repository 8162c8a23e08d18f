"""assay-compare on real sweeps: local run directories and wandb offline run directories."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from assay.compare import compare, main
from tests.conftest import HEAD

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 hex chars, shaped like a real wandb key


def _sweep(tmp: Path, *overrides: str, env_extra: dict | None = None) -> Path:
    env = {**os.environ, "ASSAY_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env_extra or {})}
    sweep = tmp / "sweep"
    cmd = [str(BIN / "assay-train"), "-m", "debug=fast", "trainer.max_steps=2", f"hydra.sweep.dir={sweep}", *overrides]
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return sweep


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """2 learning rates x 2 seeds, CSV logger (metrics.csv for the learning curves)."""
    return _sweep(tmp_path_factory.mktemp("local"), "logger=csv", "seed=0,1", "optim.lr=1e-3,3e-3")


@pytest.fixture(scope="module")
def wandb_sweep(tmp_path_factory):
    """2 seeds with the wandb logger, offline, with a (fake) API key in the environment."""
    return _sweep(tmp_path_factory.mktemp("wandb"), "logger=wandb", "seed=0,1", env_extra={"WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY})


def test_sweep_table_csv_markdown_and_plots(local_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    main([str(local_sweep), "--by", "optim.lr", "--metric", "test/loss,val/loss", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "optim.lr" in printed and "±" in printed
    table = pd.read_csv(out / "compare.csv")
    assert list(table["optim.lr"]) == [0.001, 0.003] and list(table["n"]) == [2, 2]
    # mean and sample std over the two seeds, recomputed from the run directories themselves
    runs = {}
    for d in sorted(p for p in local_sweep.iterdir() if p.name.isdigit()):
        s = json.loads((d / "summary.json").read_text())
        lr = float(pd.json_normalize(__import__("yaml").safe_load((d / "config.yaml").read_text()))["optim.lr"][0])
        runs.setdefault(lr, []).append(s["metrics"]["test/loss"])
    for _, row in table.iterrows():
        values = pd.Series(runs[row["optim.lr"]])
        assert row["test/loss mean"] == pytest.approx(values.mean(), abs=1e-12)
        assert row["test/loss std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
    md = (out / "compare.md").read_text()
    assert "| optim.lr | n | test/loss | val/loss |" in md and " ± " in md
    assert (out / "runs.csv").is_file() and len(pd.read_csv(out / "runs.csv")) == 4
    for png in ("test_loss_vs_optim.lr.png", "val_loss_vs_optim.lr.png", "curve_train_loss.png"):
        assert (out / png).stat().st_size > 5000, png


def test_default_grouping_is_every_swept_key_but_the_seed(local_sweep, tmp_path):
    result = compare([str(local_sweep)], out=tmp_path, plots=False, quiet=True)
    assert result["by"] == ["optim.lr"]
    assert list(result["table"]["n"]) == [2, 2]


def test_failed_and_missing_runs_are_listed_not_dropped(local_sweep, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(local_sweep, sweep, ignore=shutil.ignore_patterns("*.ckpt", "model", "tokenizer"))
    # jobs in sweep order: 0 = (seed 0, lr 1e-3), 1 = (0, 3e-3), 2 = (1, 1e-3), 3 = (1, 3e-3)
    (sweep / "1" / "summary.json").unlink()  # a job that crashed
    shutil.rmtree(sweep / "2")  # a job that never started
    result = compare([str(sweep)], by=["optim.lr"], out=tmp_path / "out", plots=False)
    status = {Path(r.name).name: r.status for r in result["runs"]}
    assert status == {"0": "completed", "1": "failed", "2": "missing", "3": "completed"}
    table = result["table"].set_index("optim.lr")
    assert table.loc["0.001", "n"] == 1 and table.loc["0.001", "failed"] == 1
    assert table.loc["0.003", "n"] == 1 and table.loc["0.003", "failed"] == 1
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "failed" in md and "missing" in md and str(sweep / "2") in md
    assert "missing" in capsys.readouterr().out


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda d: (d / "config.yaml").write_text("model:\n  name: [tiny"), "config.yaml is half-written"),
        (lambda d: (d / "summary.json").write_text('{"status": "compl'), "summary.json is half-written"),
        (lambda d: [p.unlink() for p in (d / "config.yaml", d / ".hydra" / "config.yaml")], "not a run directory"),
    ],
)
def test_bad_run_directory_is_one_line(local_sweep, tmp_path, capsys, setup, expected):
    run = tmp_path / "run"
    shutil.copytree(local_sweep / "0", run, ignore=shutil.ignore_patterns("*.ckpt", "model", "tokenizer"))
    setup(run)
    with pytest.raises(SystemExit) as e:
        main([str(run), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and expected in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("wandb:not a/valid/path", "expected 'project' or 'entity/project'"),
        ("wandb:entity/project", "needs a login"),
        ("no/such/dir/anywhere", "no such directory, and not a wandb project path"),
    ],
)
def test_bad_wandb_path_is_one_line(arg, expected, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with pytest.raises(SystemExit) as e:
        main([arg])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and expected in err and len(err.splitlines()) == 1


def test_unknown_group_key_is_one_line(local_sweep, capsys, tmp_path):
    with pytest.raises(SystemExit):
        main([str(local_sweep), "--by", "optim.lrr", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert "--by='optim.lrr'" in err and "optim.lr" in err


def test_wandb_offline_runs_compare_like_local_ones(wandb_sweep, tmp_path):
    dirs = [str(wandb_sweep / j / "wandb") for j in ("0", "1")]
    result = compare(dirs, by=["objective.name"], metrics=["test/loss"], out=tmp_path, quiet=True)
    runs = result["runs"]
    assert [r.source for r in runs] == ["wandb-offline", "wandb-offline"] and all(r.status == "completed" for r in runs)
    # flattened resolved config, one run per job (the second job must not log into the first one's run)
    assert sorted(r.config["seed"] for r in runs) == [0, 1]
    for r, job in zip(runs, ("0", "1")):
        local = json.loads((wandb_sweep / job / "summary.json").read_text())["metrics"]
        assert r.metrics["test/loss"] == pytest.approx(local["test/loss"], abs=1e-12)
        steps = r.history.dropna(subset=["train/loss"])["step"].tolist()
        assert steps == [0, 1]  # per-step metrics, each step once
    assert result["table"]["n"].tolist() == [2]
    # the wandb run config carries the provenance record: the commit is read back from wandb, not grouped on
    assert all(r.provenance["code"]["commit"] == HEAD for r in runs) and not any(k.startswith("provenance.") for r in runs for k in r.config)
    assert (tmp_path / "curve_train_loss.png").is_file()


def test_default_output_beside_the_runs_never_in_the_working_directory(wandb_sweep, tmp_path, monkeypatch):
    from assay.compare.cli import default_out

    monkeypatch.chdir(tmp_path)
    dirs = [str(wandb_sweep / j / "wandb") for j in ("0", "1")]
    assert default_out(dirs) == wandb_sweep.resolve() / "compare"  # the runs' common directory, not ./compare
    one = wandb_sweep / "0" / "wandb"
    assert default_out([str(one)]) == (wandb_sweep / "0").resolve() / "compare"  # a run's wandb dir: the run's
    offline = next(one.glob("offline-run-*"))
    assert default_out([str(offline)]) == (wandb_sweep / "0").resolve() / "compare"
    assert default_out([str(wandb_sweep)]) == wandb_sweep.resolve() / "compare"


def test_wandb_api_key_never_lands_in_the_run_directory(wandb_sweep):
    leaked = []
    for path in wandb_sweep.rglob("*"):
        if path.is_file() and FAKE_KEY.encode() in path.read_bytes():
            leaked.append(str(path.relative_to(wandb_sweep)))
    assert not leaked, leaked
    records = list(wandb_sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert len(records) == 2  # offline record files, ready for `wandb sync <dir>`


def test_paired_with_gives_each_group_minus_its_baseline_on_the_same_seed(local_sweep, tmp_path):
    """The README's --paired-with on a real sweep: lr 3e-3 − lr 1e-3, seed by seed, recomputed here."""
    out = tmp_path / "out"
    main([str(local_sweep), "--by", "optim.lr", "--metric", "test/loss", "--paired-with", "optim.lr=0.001", "--out", str(out), "--no-plots"])
    pairs = pd.read_csv(out / "paired.csv")
    assert list(pairs["optim.lr"]) == [0.003]
    by_seed: dict = {}
    for d in sorted(p for p in local_sweep.iterdir() if p.name.isdigit()):
        cfg = pd.json_normalize(__import__("yaml").safe_load((d / "config.yaml").read_text()))
        by_seed.setdefault(int(cfg["seed"][0]), {})[float(cfg["optim.lr"][0])] = json.loads((d / "summary.json").read_text())["metrics"]["test/loss"]
    diffs = pd.Series([v[0.003] - v[0.001] for v in by_seed.values()])
    assert pairs["test/loss delta"][0] == pytest.approx(diffs.mean(), abs=1e-12)
    assert pairs["test/loss pairs"][0] == 2
    assert "Δ test/loss" in (out / "paired.md").read_text()
