"""selection=mates end to end on the skills corpus with 30% corrupted completions (debug=fast): a
re-selection at every stage boundary, each with its oracle cost and detection against the flags, and
a kill-and-resume that re-selects exactly as the uninterrupted run."""

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import run_in_hydra

# 40 examples at batch 8, keep half: 3 batches an epoch; 12 steps = 4 one-epoch stages, re-selected after epochs 0, 1, 2
MATES = ["debug=fast", "noise=corrupt", "noise.p=0.3", "data.max_train_examples=40", "trainer.max_steps=12", "trainer.val_check_interval=3",
         "selection=mates", "selection.oracle_size=8", "selection.selector.fraction=0.5"]


@pytest.mark.integration
def test_mates_reselects_at_every_stage_boundary_with_its_oracle_cost(tmp_path):
    summary = run_in_hydra(MATES, tmp_path)
    assert summary["selection"]["cost"]["stage"] == 0  # the first stage trains on random data
    history = summary["reselections"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert [h["cost"]["stage"] for h in history] == [1, 2, 3]
    kept = []
    for h in history:
        assert h["cost"]["oracle_probes"] == h["cost"]["probe_steps"] == 8 and h["cost"]["oracle_seconds"] > 0
        assert h["cost"]["influence_model"]["pairs"] == 8
        table = pd.read_parquet(tmp_path / h["file"])
        assert len(table) == 40 and table["kept"].sum() == h["kept"] == 20 and np.isfinite(table["score"]).all()
        detection = h["detection"]["is_corrupted"]
        assert 0.0 <= detection["auroc"] <= 1.0
        print(f"stage {h['cost']['stage']}: is_corrupted AUROC {detection['auroc']:.3f}, held-out Spearman "
              f"{h['cost']['influence_model'].get('heldout_spearman')}, oracle {h['cost']['oracle_seconds']:.2f}s")
        kept.append(set(table.loc[table["kept"], "id"]))
    assert len({frozenset(k) for k in kept}) > 1  # the live model (and the draw) moved between stages
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    scorer = next(v["scorer"] for v in state["callbacks"].values() if "scorer" in v)
    assert scorer["stage"] == 3 and [p["stage"] for p in scorer["pairs"]] == [1, 2, 3]
    assert all(len(p["ids"]) == len(p["values"]) == 8 for p in scorer["pairs"]) and scorer["influence_model"] is not None


@pytest.mark.integration
def test_mates_resumed_after_a_reselection_reselects_as_the_uninterrupted_run(tmp_path):
    """Stop after 7 steps (stages 1 and 2 selected, mid-epoch 2), resume to 12: the third stage's oracle
    pairs and selection equal those of one uninterrupted run, so the state carried the stage count and the pairs."""
    # a constant learning rate: the schedule does not depend on max_steps, so the cut run's first 7 steps are the whole run's
    args = [*MATES, "checkpoint_every_n_steps=1", "selection.refit=false", "optim.schedule=constant"]
    whole = run_in_hydra(args, tmp_path / "whole")
    first = run_in_hydra([*args, "trainer.max_steps=7"], tmp_path / "cut")  # killed after step 7
    assert [h["epoch"] for h in first["reselections"]] == [0, 1]
    (tmp_path / "cut" / "summary.json").unlink()  # stopped, not completed
    resumed = run_in_hydra([*args, "ckpt_path=last"], tmp_path / "cut")
    assert [h["epoch"] for h in resumed["reselections"]] == [0, 1, 2]
    assert [h["cost"]["stage"] for h in resumed["reselections"]] == [1, 2, 3]  # the stage count came back with the checkpoint
    assert [h["cost"]["oracle_probes"] for h in resumed["reselections"]] == [8, 0, 0]  # static: fitted once, restored on resume
    for epoch in (0, 1, 2):
        a, b = (pd.read_parquet(tmp_path / run / f"selection_epoch{epoch}.parquet") for run in ("whole", "cut"))
        assert a["id"].tolist() == b["id"].tolist() and a["kept"].tolist() == b["kept"].tolist()
        assert np.allclose(a["score"], b["score"], atol=1e-5)
    assert whole["reselections"][-1]["kept"] == resumed["reselections"][-1]["kept"]
