"""Re-scoring during training and the warm-up -> score -> select -> train recipe, end to end (debug=fast)."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from assay.errors import UserError
from tests.conftest import run_in_hydra

# 40 examples at batch 8: 5 batches an epoch over the whole pool, 3 over a kept half.
FAST = ["debug=fast", "noise=corrupt", "noise.p=0.3", "data.max_train_examples=40", "trainer.max_steps=12", "trainer.val_check_interval=3"]


@pytest.mark.integration
def test_model_scorer_rescores_every_epoch_from_the_live_model(tmp_path):
    summary = run_in_hydra([*FAST, "selection=el2n", "selection.allow_untrained=true", "selection.rescore_every=1", "ordering=curriculum", "ordering.score_from=selection"], tmp_path)
    history = summary["reselections"]
    # 12 steps = 4 epochs of 3 batches: epochs 0, 1, 2 end with a re-selection, the last has none after it
    assert [h["epoch"] for h in history] == [0, 1, 2]
    for h in history:
        table = pd.read_parquet(tmp_path / h["file"])
        assert len(table) == 40 and table["kept"].sum() == h["kept"] == 20
        assert "is_corrupted" in h["detection"]
    # the live model moved between epochs, so its scores did too
    first, last = (pd.read_parquet(tmp_path / history[i]["file"])["score"].to_numpy() for i in (0, -1))
    assert not np.allclose(first, last)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    sampler = next(v["sampler"] for v in state.values() if isinstance(v, dict) and "sampler" in v)  # the datamodule's state
    assert sampler["selection_epoch"] == 2 and sampler["fingerprint"] == summary["data"]["data_order_fingerprint"]
    assert sorted(sampler["rows"]) == sorted(np.flatnonzero(pd.read_parquet(tmp_path / "selection_epoch2.parquet")["kept"]).tolist())


@pytest.mark.integration
def test_dynamics_scorer_prunes_online_from_its_own_store(tmp_path):
    """Cartography with no earlier stage: epoch 0 trains on everything, then prunes from this run's records."""
    summary = run_in_hydra([*FAST, "selection=cartography", "selection.region=easy", "selection.rescore_every=2"], tmp_path)
    assert summary["data"]["kept_examples"] == 40 and summary["selection"]["selector"] == "all"
    history = summary["reselections"]
    assert [h["epoch"] for h in history] == [1] and history[0]["kept"] == 20
    assert (tmp_path / "cartography.parquet").is_file()


@pytest.mark.integration
def test_warmup_select_recipe_trains_the_base_model_on_the_selection(tmp_path):
    summary = run_in_hydra(["experiment=warmup_select", "debug=fast", "noise=corrupt", "noise.p=0.3", "data.max_train_examples=40", "trainer.max_steps=6"], tmp_path)
    warm, train = summary["stages"]["warmup"], summary["stages"]["train"]
    assert warm["data"]["kept_examples"] == 2  # 5% of 40
    assert train["selection"]["scorer"] == "less" and train["data"]["kept_examples"] == 10
    assert "is_corrupted" in train["selection"]["detection"]
    config = yaml.safe_load((tmp_path / "train" / "config.yaml").read_text())
    assert config["selection"]["dynamics_from"] == str(tmp_path / "warmup") == config["previous_stage"]
    assert config["model"].get("init_from") in (None, "")  # the base model, not the warm-up's


@pytest.mark.integration
def test_stage_fields_are_checked(tmp_path):
    with pytest.raises(UserError, match="stages\\[0\\].init_from_prev"):
        run_in_hydra(["debug=fast", "stages=[{name: a, init_from_prev: false}]"], tmp_path)


@pytest.mark.integration
def test_resume_after_a_reselection_serves_the_reselected_rows(tmp_path):
    """Stop after 8 steps (two re-selections, mid-epoch 2), resume to 12: the resumed run keeps
    the data-order fingerprint and its re-selection history, and serves exactly the re-selected rows."""
    from assay.dynamics.store import read_store

    args = [*FAST, "selection=el2n", "selection.allow_untrained=true", "selection.rescore_every=1", "checkpoint_every_n_steps=1"]
    first = run_in_hydra([*args, "trainer.max_steps=8"], tmp_path)
    assert [h["epoch"] for h in first["reselections"]] == [0, 1]
    (tmp_path / "summary.json").unlink()  # stopped there, not completed: a completed run is never continued
    resumed = run_in_hydra([*args, "trainer.max_steps=12", "ckpt_path=last"], tmp_path)
    assert resumed["data"]["data_order_fingerprint"] == first["data"]["data_order_fingerprint"]
    assert [h["epoch"] for h in resumed["reselections"]] == [0, 1, 2]
    store = read_store(tmp_path / "dynamics")
    for epoch in (1, 2, 3):  # every epoch after a re-selection serves only what it kept
        kept = pd.read_parquet(tmp_path / f"selection_epoch{epoch - 1}.parquet").query("kept")["id"].astype(str)
        served = set(store.loc[store["epoch"] == epoch, "id"].astype(str))
        assert served and served <= set(kept)
