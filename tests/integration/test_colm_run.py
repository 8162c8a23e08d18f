"""CoLM end to end: each step draws r·b examples and trains on a coreset of b, with LoRA on SFT and
with DPO (a pair is one element); the sampler counts the drawn rows, the per-sample store and the
logged counts the trained ones."""

import pandas as pd
import pytest
import torch

from assay.dynamics.store import read_store
from tests.conftest import run_in_hydra

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false", "logger=csv", "eval.generate=false", "batch_selection=colm"]


@pytest.mark.parametrize("extra", [["model.lora.r=4"], ["objective=dpo", "data.format=preference"]], ids=["sft_lora", "dpo"])
def test_each_step_trains_b_of_the_r_b_drawn(tmp_path, extra):
    run = tmp_path / "run"
    summary = run_in_hydra([*FAST, *extra, "trainer.max_steps=3", "checkpoint_every_n_steps=3"], run)
    assert summary["global_step"] == 3
    store = read_store(run / "dynamics")
    assert store.groupby("step").size().tolist() == [8, 8, 8]  # b = data.batch_size trained each step
    assert store["id"].nunique() == 24  # distinct examples within the epoch
    logged = pd.read_csv(run / "metrics.csv")
    coreset = logged.dropna(subset=["train/coreset/drawn"])
    assert coreset["train/coreset/drawn"].tolist() == [16.0, 16.0, 16.0]  # r = 2 draws 2b
    counts = coreset[[c for c in coreset if c.startswith("train/coreset/") and c.split("/")[-1] not in ("drawn", "select_s")]]
    assert counts.sum(axis=1).tolist() == [8.0, 8.0, 8.0]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["AssayDataModule"]["sampler"]["consumed"] == 3 * 16  # the drawn rows, not the trained ones
