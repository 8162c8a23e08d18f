"""DataFlex's methods end to end (debug=fast, a few steps each): the loss weighters as an aggregator,
delta_loss reading a warm-up stage's store, NEAR and TSDS on the model's embeddings, NICE's sampled target prompts."""

import math

import pandas as pd
import pytest

from tests.conftest import run_in_hydra

pytestmark = pytest.mark.integration


def test_linupper_weighter_trains_sft(tmp_path):
    summary = run_in_hydra(["debug=fast", "objective/aggregator=linupper", "trainer.max_steps=2", "eval.val_generate=false"], tmp_path)
    assert summary["status"] == "completed" and math.isfinite(summary["metrics"]["test/loss"])


def test_delta_loss_reads_the_warm_up_store(tmp_path):
    # 24 examples in batches of 8: 6 steps = two presentations of every example
    common = ["debug=fast", "noise=corrupt", "noise.p=0.3", "data.max_train_examples=24", "eval.val_generate=false"]
    run_in_hydra([*common, "trainer.max_steps=6"], tmp_path / "warm")
    summary = run_in_hydra([*common, "trainer.max_steps=2", "selection=delta_loss", f"selection.dynamics_from={tmp_path / 'warm'}"], tmp_path / "sel")
    sel = pd.read_parquet(tmp_path / "sel" / "selection.parquet")
    assert summary["selection"]["scorer"] == "delta_loss" and int(sel["kept"].sum()) == 12
    assert sel["score"].notna().all() and "is_corrupted" in summary["selection"]["detection"]


def test_near_on_the_models_embeddings(tmp_path):
    summary = run_in_hydra(["debug=fast", "selection=near", "selection.embedder=hidden_mean", "selection.neighbours=5",
                            "trainer.max_steps=2", "eval.val_generate=false"], tmp_path)
    sel = pd.read_parquet(tmp_path / "selection.parquet")
    assert summary["selection"]["scorer"] == "near" and int(sel["kept"].sum()) == len(sel) // 2


def test_tsds_on_the_models_embeddings(tmp_path):
    summary = run_in_hydra(["debug=fast", "selection=tsds", "selection.embedder=hidden_mean", "selection.neighbours=50",
                            "trainer.max_steps=2", "eval.val_generate=false"], tmp_path)
    sel = pd.read_parquet(tmp_path / "selection.parquet")
    assert summary["selection"]["scorer"] == "tsds" and int(sel["kept"].sum()) == len(sel) // 2


def test_nice_samples_the_target_prompts(tmp_path):
    summary = run_in_hydra(["debug=fast", "selection=nice", "selection.allow_untrained=true", "selection.samples=1", "selection.max_new_tokens=4",
                            "selection.proj_dim=64", "selection.params=[layers.1.mlp]", "trainer.max_steps=2", "eval.val_generate=false"], tmp_path)
    sel = pd.read_parquet(tmp_path / "selection.parquet")
    assert summary["selection"]["scorer"] == "nice" and int(sel["kept"].sum()) == len(sel) // 2
    assert "target_mean_reward" in summary["selection"]["cost"]
