"""End-to-end runs on the embedded data (a few optimizer steps each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import USER_MODEL_CACHE, run_in_hydra, without_speed

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false"]


def test_default_run_leaves_a_complete_run_directory(tmp_path):
    summary = run_in_hydra(FAST, tmp_path)
    assert summary["status"] == "completed"
    for name in ("config.yaml", "summary.json", "metrics.csv", "selection.parquet", "tokenizer", "model", "checkpoints/last.ckpt"):
        assert (tmp_path / name).exists(), name
    metrics = summary["metrics"]
    assert {"test/loss", "test/exact_match", "val/loss"} <= set(metrics)
    assert {f"test/exact_match/{d}" for d in ("copy", "reverse", "sort", "count", "add")} <= set(metrics)
    # per-sample store: one record per example per step, keyed by id
    from assay.dynamics.store import read_store

    records = read_store(tmp_path / "dynamics")
    assert len(records) == 4 * 8 and not records.duplicated(["id", "step"]).any()
    assert {"loss", "confidence", "epoch"} <= set(records.columns)
    train_ids = set(pd.read_parquet(tmp_path / "selection.parquet")["id"])
    assert set(records["id"]) <= train_ids
    # the checkpoint carries the sampler position and the data-order fingerprint
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    sampler = ckpt["AssayDataModule"]["sampler"]
    assert sampler["consumed"] == 4 * 8 and sampler["fingerprint"] == summary["data"]["data_order_fingerprint"]


def test_same_command_twice_gives_the_same_metrics(tmp_path):
    a = run_in_hydra(FAST, tmp_path / "a")["metrics"]
    b = run_in_hydra(FAST, tmp_path / "b")["metrics"]
    assert without_speed(a) == without_speed(b)


def test_random_selection_and_weights_mixture_are_recorded(tmp_path):
    summary = run_in_hydra(
        [*FAST, "mixture=weights", "mixture.weights={copy:3,reverse:1,sort:0,count:0,add:0}", "selection=random", "selection.selector.fraction=0.5", "data.max_train_examples=null"],
        tmp_path,
    )
    counts = summary["data"]["source_counts"]
    assert set(counts) == {"copy", "reverse"}
    assert counts == {"copy": 1500, "reverse": 500}  # copy's 1500 examples limit the total to 2000
    sel = pd.read_parquet(tmp_path / "selection.parquet")
    assert sel["kept"].sum() == summary["data"]["kept_examples"] == len(sel) // 2


def test_sft_then_dpo_in_one_command(tmp_path):
    summary = run_in_hydra([*FAST, "experiment=sft_then_dpo", "trainer.max_steps=4"], tmp_path)
    assert set(summary["stages"]) == {"sft", "dpo"}
    dpo = summary["stages"]["dpo"]
    assert dpo["choices"]["objective"] == "dpo" and summary["stages"]["sft"]["choices"]["objective"] == "sft"
    assert {"test/pref_acc", "test/reward_margin", "test/exact_match"} <= set(dpo["metrics"])
    assert (tmp_path / "sft" / "model").is_dir() and (tmp_path / "dpo" / "summary.json").is_file()
    stage_cfg = (tmp_path / "dpo" / "config.yaml").read_text()
    assert f"init_from: {tmp_path / 'sft'}" in stage_cfg
    # reference log-probs were cached on disk and are reused by a second run of the same stage
    cached = [Path(p) for p in dpo["reference_logps"].values()]
    assert all(p.exists() and (p.is_file() or any(p.iterdir())) for p in cached)  # a cache folder of one reference
    again = run_in_hydra([*FAST, "objective=dpo", "data.format=preference", f"model.init_from={tmp_path / 'sft'}", "trainer.max_steps=1"], tmp_path / "again")
    assert again["reference_logps"] == dpo["reference_logps"]


def test_dpo_with_flipped_pairs_records_the_flags(tmp_path):
    run_in_hydra([*FAST, "objective=dpo", "data.format=preference", "noise=pairwise_flip", "noise.p=0.3"], tmp_path)
    from assay.dynamics.store import read_store

    records = read_store(tmp_path / "dynamics")
    assert {"is_flipped", "reward_margin", "confidence"} <= set(records.columns)
    assert 0.1 < records.drop_duplicates("id")["is_flipped"].mean() < 0.5


def test_lora_trains_only_adapters_and_saves_merged_weights_when_asked(tmp_path):
    summary = run_in_hydra([*FAST, "model.lora.r=4", "model.lora.target_modules=[q_proj,v_proj]", "model.save_merged=true"], tmp_path)
    assert summary["status"] == "completed"
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert any("lora_A" in k for k in ckpt["state_dict"])
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model_type"] == "llama" and not (tmp_path / "model" / "adapter_config.json").exists()


@pytest.mark.cli
def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = run_in_hydra([*FAST, "logger=wandb"], tmp_path)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "summary.json").is_file()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    # where the wandb run is, and that it is offline: what the console's last lines name with `wandb sync`
    assert summary["wandb"]["dir"] == str(runs[0]) and summary["wandb"]["offline"] is True
    # the logger records; it does not change training: the default run's golden test loss
    golden = json.loads((Path(__file__).parents[1] / "golden" / "values.json").read_text())["training"]["sft"]
    assert summary["metrics"]["test/loss"] == pytest.approx(golden["test_loss"], rel=1e-5)


@pytest.mark.cli
def test_cli_help_cfg_and_list(tmp_path):
    env = {**os.environ}
    out = subprocess.run([sys.executable, "-m", "assay.train", "--cfg", "job", "objective=dpo", "data.format=preference"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0 and "beta: 0.1" in out.stdout and "name: dpo" in out.stdout
    out = subprocess.run([sys.executable, "-m", "assay.train", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0 and "assay-list" in out.stdout and "name: tiny_llama" in out.stdout
    out = subprocess.run([sys.executable, "-m", "assay.catalog", "noise"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "pairwise_flip" in out.stdout and "Swap chosen and rejected" in out.stdout


@pytest.mark.cli
def test_multirun_runs_every_job(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "assay.train", "-m", *FAST, "logger=none", "trainer.max_steps=2", "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 2


@pytest.mark.skipif(not (USER_MODEL_CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file(), reason="SmolLM2 GGUF not fetched; run `assay-fetch smollm2` (make test does)")
def test_smollm2_from_gguf_trains_a_step(tmp_path):
    gguf = USER_MODEL_CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
    summary = run_in_hydra(
        [*FAST, "model=smollm2_135m", f"model.gguf_path={gguf}", "trainer.max_steps=1", "data.batch_size=4",
         "data.max_train_examples=8", "data.max_eval_examples=4", "eval.max_new_tokens=2", "logger=none", "dynamics=off"],
        tmp_path,
    )
    assert summary["status"] == "completed"
    # pretrained weights: the loss on the held-out skills is far below the uniform-vocabulary loss log(49152)=10.8
    assert summary["metrics"]["test/loss"] < 8.0
