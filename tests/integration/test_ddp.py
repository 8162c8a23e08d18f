"""Two training processes on the CPU (DDP over gloo), end to end: every rank's per-sample records
land once, evaluation covers the whole held-out set, only rank 0 writes run artefacts, Dr. DPO's
global scope and β-DPO's statistics match one process over the global batch, a failing rank fails
the command, and a killed two-process run resumes to the uninterrupted result.

Multi-GPU DDP (NCCL) goes through the same assay code; it is not run here. The tiny model keeps
each run to a few steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from assay.dynamics.store import read_gradients, read_store
from assay.objectives.aggregators import dr_dpo_loss
from tests.conftest import without_speed
from tests.integration.test_slurm import cluster  # noqa: F401  (starts slurm/local_cluster.sh or skips with the reason)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TRAIN = str(Path(sys.executable).parent / "assay-train")
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true", "trainer.threads=1"]
# 21 examples kept by a random selection (rank 0 selects, the other rank receives it): an odd kept
# set, so the sampler drops one row per epoch and each rank serves 10 rows, batches of 4, 4, 2.
# 6 steps (two epochs) with a checkpoint after each; gradient features every other step.
SFT = [
    "debug=fast", "logger=csv", "selection=random", "selection.selector.count=21",
    "data.batch_size=4", "trainer.max_steps=6", "trainer.val_check_interval=3", "checkpoint_every_n_steps=1",
    "dynamics=gradients", "dynamics.grad_every_n_steps=2", "dynamics.proj_dim=16",
]
STEPS, PER_RANK = 6, [4, 4, 2, 4, 4, 2]


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, ASSAY_CACHE=str(tmp_path / "cache"), WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for key in [k for k in env if k.startswith(("SLURM_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_"))]:
        env.pop(key)
    return env


def _train(run_dir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TRAIN, *args, f"hydra.run.dir={run_dir}"], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_sft")
    run_dir = tmp / "run"
    r = _train(run_dir, _env(tmp), *DDP, *SFT)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir, tmp


def test_every_rank_records_its_shard_once_per_step(sft_run):
    run_dir, _ = sft_run
    store = read_store(run_dir / "dynamics")
    kept = pd.read_parquet(run_dir / "selection.parquet")
    assert not store.duplicated(["id", "step"]).any()
    assert sorted(store["step"].unique()) == list(range(1, STEPS + 1))
    counts = store.groupby(["step", "rank"]).size().unstack()
    assert counts[0].tolist() == counts[1].tolist() == PER_RANK  # both shards, every step
    for _, epoch in store.groupby("epoch"):
        assert len(epoch) == epoch["id"].nunique() == 20  # 21 kept, one dropped per epoch, none repeated
    assert set(store["id"]) <= set(kept.loc[kept["kept"], "id"])  # both ranks trained on rank 0's selection

    grads = read_gradients(run_dir / "dynamics" / "gradients")
    assert not grads.index.duplicated(["id", "step"]).any()
    assert grads.index.groupby(["step", "rank"]).size().unstack()[1].tolist() == [4, 4, 2]
    assert sorted(grads.index["step"].unique()) == [2, 4, 6]
    # the gradient records are those of the very rows each rank trained on at that step
    both = grads.index.merge(store, on=["id", "step"], suffixes=("", "_loss"))
    assert len(both) == len(grads) and (both["rank"] == both["rank_loss"]).all()
    assert np.isfinite(grads.features()).all()


def test_only_rank_zero_writes_run_artefacts(sft_run):
    run_dir, _ = sft_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == STEPS
    kept = summary["data"]["kept_examples"]
    assert kept == 21  # the uneven case: one row per epoch dropped, no rank waits for another
    assert (run_dir / "model").is_dir() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["train/loss"].notna().sum() == STEPS  # one logger, rank 0's
    assert not list(run_dir.glob("**/*.tmp"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["AssayDataModule"]["sampler"]["world"] == 2


def _one_process_test_metrics(run_dir: Path, out: Path) -> dict:
    """Evaluate the run's final weights on the test split in this process (one rank, no DDP)."""
    import pytorch_lightning as pl
    from datasets import DatasetDict

    from assay.config import validate
    from assay.data import build_examples
    from assay.data.collate import tokenize_split
    from assay.data.datamodule import AssayDataModule
    from assay.module import AssayModule
    from tests.conftest import compose_config

    spec = validate(compose_config([*(o for o in SFT if not o.startswith("selection")), "selection=none", f"model.init_from={run_dir}"], output_dir=out))
    examples = build_examples(spec.data, spec.mixture, spec.noise)
    model, tokenizer = spec.model.build(examples.splits)
    d = spec.data
    tokenized = DatasetDict({
        split: tokenize_split(ds, tokenizer, d.format, d.separator, d.max_length).add_column("_row", list(range(len(ds))))
        for split, ds in examples.splits.items()
    })
    rows = np.arange(len(tokenized["train"]))
    datamodule = AssayDataModule(tokenized, rows, np.zeros(len(rows)), spec.ordering.for_run(1), d.format, d.batch_size, d.eval_batch_size, tokenizer.pad_token_id)
    module = AssayModule(model, tokenizer, spec.objective, spec.optim, spec.eval)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    torch.set_num_threads(1)
    return {k: float(v) for k, v in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}


def test_evaluation_covers_the_held_out_set_as_one_process_would(sft_run):
    run_dir, tmp = sft_run
    two = json.loads((run_dir / "summary.json").read_text())["metrics"]
    one = _one_process_test_metrics(run_dir, tmp / "eval")
    assert set(one) == {k for k in two if k.startswith("test/")}
    for key, value in one.items():
        tolerance = 0.0 if "exact_match" in key else 1e-5  # losses: float sums over padded batches of another shape
        assert abs(two[key] - value) <= tolerance, (key, two[key], value)


@pytest.mark.cli
def test_killed_two_process_run_resumes_to_the_uninterrupted_result(sft_run):
    straight, tmp = sft_run
    env = _env(tmp)
    killed = tmp / "killed"
    proc = subprocess.Popen([TRAIN, *DDP, *SFT, f"hydra.run.dir={killed}"], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            ckpt = killed / "checkpoints" / "last.ckpt"
            steps = [int(p.stem.split("-")[2]) for p in (killed / "dynamics").glob("part-*-rank001.parquet")]
            if ckpt.is_file() and max(steps, default=0) >= 3:
                os.killpg(proc.pid, signal.SIGKILL)  # every rank at once, as a node failure would
                proc.wait(30)
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc={proc.returncode}) before it could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("the run never reached the kill point")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not (killed / "summary.json").exists()
    step = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 2 <= step < STEPS, step

    r = _train(killed, env, *DDP, *SFT, "ckpt_path=last")
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((straight / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert b["global_step"] == a["global_step"] == STEPS and b["resumed_from"]
    assert b["metrics"].keys() == a["metrics"].keys()
    for key in without_speed(a["metrics"]):  # all but the wall-clock speed/... ones
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=1e-6), key

    sa, sb = read_store(straight / "dynamics"), read_store(killed / "dynamics")
    assert not sb.duplicated(["id", "step"]).any()
    assert sb[["id", "step", "rank"]].equals(sa[["id", "step", "rank"]])
    assert np.allclose(sb["loss"], sa["loss"], atol=1e-6)
    ga, gb = read_gradients(straight / "dynamics" / "gradients"), read_gradients(killed / "dynamics" / "gradients")
    assert gb.index[["id", "step", "rank"]].equals(ga.index[["id", "step", "rank"]])
    assert np.allclose(gb.features(), ga.features(), atol=1e-5)


# β-DPO's statistics with Dr. DPO's global soft-min on top; the filter keeps every pair so that one
# process over the same global batch (the sampler's order does not depend on the world size) is the
# exact reference.
PREF = [
    "debug=fast", "logger=csv", "objective=beta_dpo", "data.format=preference", "objective/aggregator=dr_dpo",
    "objective.controller.keep=1.0", "dynamics=losses", "trainer.max_steps=3", "trainer.val_check_interval=3",
]


@pytest.mark.cli
def test_dr_dpo_global_and_beta_dpo_in_two_processes_equal_one_process_over_the_global_batch(tmp_path):
    env = _env(tmp_path)
    two, one = tmp_path / "two", tmp_path / "one"
    r = _train(two, env, *DDP, *PREF, "objective.aggregator.scope=global", "data.batch_size=4")
    assert r.returncode == 0, r.stderr[-3000:]
    r = _train(one, env, *PREF, "data.batch_size=8")
    assert r.returncode == 0, r.stderr[-3000:]

    s2, s1 = read_store(two / "dynamics"), read_store(one / "dynamics")
    assert (s2.groupby(["step", "rank"]).size() == 4).all() and set(s2["rank"]) == {0, 1}
    merged = s1.merge(s2, on=["step", "id"], suffixes=("_one", "_two"))
    assert len(merged) == len(s1) == len(s2) == 3 * 8  # the same pairs at every step
    for column in ("loss", "beta", "dr_weight"):
        assert np.allclose(merged[f"{column}_one"], merged[f"{column}_two"], atol=1e-5), column
    for step, rows in s2.groupby("step"):
        assert rows["beta"].nunique() == 1  # one β for the global batch, on both ranks
        assert rows["dr_weight"].sum() == pytest.approx(1.0, abs=1e-5)  # one softmax over both ranks' pairs
        assert rows.groupby("rank")["dr_weight"].sum().max() < 0.999
    # the logged loss (rank 0's) is the soft-min over both ranks' per-pair losses of its step
    logged = pd.read_csv(two / "metrics.csv")["train/loss"].dropna().to_numpy()
    beta_prime = float(yaml.safe_load((two / "config.yaml").read_text())["objective"]["aggregator"]["beta_prime"])
    expected = [float(dr_dpo_loss(torch.tensor(rows["loss"].to_numpy()), beta_prime)[0]) for _, rows in s2.groupby("step")]
    assert np.allclose(logged, expected, atol=1e-5), (logged, expected)


@pytest.mark.cli
def test_a_failing_rank_fails_the_command(tmp_path):
    run_dir = tmp_path / "run"
    # rank 1 cannot write its first store part (a directory sits where its temporary file goes)
    (run_dir / "dynamics" / "part-000000001-000000001-rank001.tmp").mkdir(parents=True)
    started = time.time()
    r = _train(run_dir, _env(tmp_path), *DDP, "debug=fast", "logger=csv", "dynamics=losses", "checkpoint_every_n_steps=1")
    assert r.returncode != 0, r.stdout[-2000:]
    assert "IsADirectoryError" in r.stderr
    assert not (run_dir / "summary.json").exists()
    assert time.time() - started < 600  # no rank left waiting in a collective


@pytest.mark.cli
def test_slurm_ddp_profile_runs_one_task_per_rank(cluster, tmp_path):
    """``hydra/launcher=slurm_ddp_local``: one sbatch job of two tasks; srun starts both ranks, and
    Lightning's SLURM environment (not its own launcher) joins them into one run."""
    sweep = tmp_path / "sweep"
    r = subprocess.run(
        [TRAIN, "-m", *DDP, "debug=fast", "logger=csv", "trainer.max_steps=2", "hydra/launcher=slurm_ddp_local", f"hydra.sweep.dir={sweep}"],
        env=_env(tmp_path), cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (script,) = (sweep / ".submitit").glob("*_submission.sh")
    assert "#SBATCH --ntasks-per-node=2\n" in script.read_text()
    run = sweep / "0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 2
    store = read_store(run / "dynamics")
    assert (store.groupby(["step", "rank"]).size() == 8).all() and set(store["rank"]) == {0, 1}  # debug=fast: 8 rows per rank
    assert not store.duplicated(["id", "step"]).any()
    errs = sorted((sweep / ".submitit").glob("*_log.err"))
    assert len(errs) == 2  # one log per SLURM task
    # what each task printed, and what the run's log holds (rank 0's library messages go to train.log)
    logs = [*errs, *(sweep / ".submitit").glob("*_log.out"), *run.glob("train.log")]
    text = "".join(p.read_text() for p in logs)
    assert "GLOBAL_RANK: 0" in text and "GLOBAL_RANK: 1" in text


@pytest.mark.cli
def test_online_mixer_updates_from_every_rank_batches(tmp_path):
    """ODM under two processes: each update reads the per-domain mean loss over BOTH ranks' batches
    (equal to the per-sample store's mean over both ranks at that step), and the weights move once
    EXP3's uniform phase (k ln k = 8 updates for 5 domains) is over."""
    run_dir = tmp_path / "run"
    r = _train(run_dir, _env(tmp_path), *DDP, "debug=fast", "logger=csv", "mixture=odm", "mixture.update_every=1",
               "trainer.max_steps=12", "trainer.val_check_interval=6", "dynamics=losses")
    assert r.returncode == 0, r.stderr[-3000:]
    mixing = pd.read_csv(run_dir / "mixing.csv")
    assert mixing["step"].tolist() == list(range(1, 13))
    records = read_store(run_dir / "dynamics")
    assert set(records["rank"]) == {0, 1}
    records["source"] = records["id"].str.split("/").str[0]
    both_ranks = records.groupby(["step", "source"])["loss"].mean()
    for _, row in mixing.iterrows():
        for (step, source), mean in both_ranks.loc[[int(row["step"])]].items():
            assert row[f"mixing/train_loss/{source}"] == pytest.approx(mean, rel=1e-6)
    weights = mixing[[c for c in mixing.columns if c.startswith("mixing/weight/")]].to_numpy()
    assert np.allclose(weights[:8], 0.2) and not np.allclose(weights[-1], 0.2)
    assert not list(run_dir.glob("mixing.csv.tmp"))
