"""End-to-end preference runs: loss × aggregator × controller, per-sample dynamics, Curry-DPO stages."""

import pytest
import torch

from tests.conftest import run_in_hydra

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false", "logger=none"]


def test_dr_dpo_with_beta_dpo_on_noisy_pairs_records_per_sample_dynamics(tmp_path):
    from assay.dynamics.store import read_store

    summary = run_in_hydra(
        [*FAST, "objective=dpo", "data.format=preference", "objective/aggregator=dr_dpo", "objective/controller=beta_dpo", "noise=pairwise_flip"],
        tmp_path,
    )
    assert summary["status"] == "completed"
    assert {"test/pref_acc", "test/reward_margin", "test/exact_match"} <= set(summary["metrics"])
    # the run's method label, what assay-compare --by objective groups by, in the summary and the config
    assert summary["choices"]["objective"] == "dpo+dr_dpo+beta_dpo"
    from assay.compare import read_local_run

    assert read_local_run(tmp_path).config["objective.method"] == "dpo+dr_dpo+beta_dpo"
    records = read_store(tmp_path / "dynamics")
    assert len(records) == 4 * 8
    expected = {"loss", "logratio_chosen", "logratio_rejected", "margin", "beta", "dr_weight", "kept", "beta_dpo_threshold", "beta_dpo_sigma", "is_flipped"}
    assert expected <= set(records.columns)
    per_step = records.groupby("step")
    assert (per_step["kept"].sum() == 6).all()  # ⌊0.8·8⌋ pairs kept per batch
    assert ((per_step["dr_weight"].sum() - 1).abs() < 1e-5).all()
    assert (records.loc[records["kept"] == 0, "dr_weight"] == 0).all()
    # the controller's statistics are in the checkpoint
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert {"controller.threshold", "controller.sigma", "controller.updates"} <= set(state)
    assert int(state["controller.updates"]) == 4  # evaluation batches did not update it


def test_graded_pairs_with_gap_flips_summarise_the_mechanism(tmp_path):
    import pandas as pd

    from assay.dynamics.mechanism import mechanism_summary
    from assay.dynamics.store import read_store

    summary = run_in_hydra(
        [*FAST, "objective=dpo", "data.format=preference", "objective/aggregator=dr_dpo", "objective/controller=beta_dpo",
         "noise=gap_flip", "noise.p=0.3", "data.pair_kinds=[exact_vs_near,exact_vs_far,near_vs_far]", "dynamics=losses", "eval.val_generate=false"],
        tmp_path,
    )
    metrics = summary["metrics"]
    # ground-truth reward of greedy generations: 1 for every exact match, partial credit otherwise
    assert metrics["test/exact_match"] <= metrics["test/answer_reward"] <= 1.0
    expected, steps = mechanism_summary(read_store(tmp_path / "dynamics"))
    assert {"mechanism/auroc_loss", "mechanism/auroc_dr_weight", "mechanism/auroc_beta_dpo_keep", "mechanism/beta_last"} <= set(metrics)
    assert {k: metrics[k] for k in expected} == pytest.approx(expected, nan_ok=True)
    written = pd.read_csv(tmp_path / "mechanism.csv")
    assert written["step"].tolist() == steps["step"].tolist() and "beta" in written


@pytest.mark.parametrize("objective", ["simpo", "orpo", "ipo"])
def test_other_losses_run(tmp_path, objective):
    summary = run_in_hydra([*FAST, f"objective={objective}", "data.format=preference", "trainer.max_steps=2", "eval.val_generate=false"], tmp_path)
    assert summary["status"] == "completed" and "test/pref_acc" in summary["metrics"]
    assert (summary["reference_logps"] != {}) == (objective == "ipo")


def test_curry_dpo_stages_use_the_previous_stage_as_reference(tmp_path):
    summary = run_in_hydra([*FAST, "experiment=curry_dpo", "trainer.max_steps=2", "eval.val_generate=false"], tmp_path)
    stages = summary["stages"]
    assert list(stages) == ["sft", "gap3", "gap2", "gap1"]
    # a fresh reference each stage: the cached reference log-probs differ from stage to stage
    files = [stages[s]["reference_logps"]["train"] for s in ("gap3", "gap2", "gap1")]
    assert len(set(files)) == 3
    import pandas as pd

    train_ids = pd.read_parquet(tmp_path / "gap3" / "selection.parquet")["id"]
    assert train_ids.str.endswith("/vs3").all()


@pytest.mark.parametrize("lr", [1e-3, 1e-12])
def test_preference_run_records_win_rate_and_kl_against_the_reference(tmp_path, lr):
    import pandas as pd

    summary = run_in_hydra([*FAST, "objective=dpo", "data.format=preference", "eval.val_generate=false", f"optim.lr={lr}"], tmp_path)
    metrics = summary["metrics"]
    generations = pd.read_parquet(tmp_path / "test_generations.parquet")
    assert len(generations) == summary["data"]["test_examples"] and generations["id"].is_unique
    assert {"id", "prompt", "policy_generation", "reference_generation", "policy_reward", "reference_reward"} <= set(generations)
    wins = (generations["policy_reward"] > generations["reference_reward"]) + 0.5 * (generations["policy_reward"] == generations["reference_reward"])
    assert metrics["test/win_rate"] == pytest.approx(wins.mean(), abs=1e-6)
    assert not (tmp_path / "reference_init.pt").exists()  # the snapshot of the initial weights is gone after the test
    if lr < 1e-9:  # the policy has not moved from its reference: every answer ties and the KL is 0
        assert (generations["policy_generation"] == generations["reference_generation"]).all()
        assert metrics["test/win_rate"] == 0.5 and metrics["test/kl_ref"] == pytest.approx(0.0, abs=1e-6)
    else:
        assert metrics["test/kl_ref"] > 0


def test_beta_dpo_statistics_cover_the_whole_optimizer_batch_under_gradient_accumulation(tmp_path):
    """β-DPO's batch is the optimizer batch (the paper's 64 pairs): with 2 micro-batches of 4 per
    step, one update of M_0 and σ per step from all 8 margins, one β and ⌊0.8·8⌋ kept pairs per step;
    the first step equals one batch of 8 exactly (same rows, same weights)."""
    import numpy as np

    from assay.dynamics.store import read_store

    common = [*FAST, "objective=dpo", "data.format=preference", "objective/controller=beta_dpo", "noise=pairwise_flip", "dynamics=losses",
              "eval.val_generate=false", "trainer.max_steps=3"]
    run_in_hydra([*common, "data.batch_size=8"], tmp_path / "one")
    run_in_hydra([*common, "data.batch_size=4", "trainer.accumulate_grad_batches=2"], tmp_path / "two")
    cols = ["step", "id", "beta_dpo_beta", "beta_dpo_threshold", "beta_dpo_sigma", "kept", "margin"]
    one = read_store(tmp_path / "one" / "dynamics")[cols].sort_values(["step", "id"]).reset_index(drop=True)
    two = read_store(tmp_path / "two" / "dynamics")[cols].sort_values(["step", "id"]).reset_index(drop=True)
    assert len(one) == len(two) == 3 * 8
    assert one["id"].tolist() == two["id"].tolist()  # the same pairs in every optimizer step
    first_one, first_two = one[one["step"] == 0], two[two["step"] == 0]
    for c in ("beta_dpo_beta", "beta_dpo_threshold", "beta_dpo_sigma", "kept", "margin"):
        assert first_two[c].to_numpy() == pytest.approx(first_one[c].to_numpy(), rel=1e-4, abs=1e-6), c
    # every step: one β, M_0 and σ for all 8 pairs, M_0 the moving average of the mean of all 8 margins
    threshold = sigma = 0.0
    for _, step in two.groupby("step"):
        assert step[["beta_dpo_beta", "beta_dpo_threshold", "beta_dpo_sigma"]].nunique().max() == 1
        margins = step["margin"].to_numpy(dtype=np.float64)
        threshold = 0.9 * threshold + 0.1 * margins.mean()
        sigma = 0.9 * sigma + 0.1 * margins.std(ddof=1)
        assert step["beta_dpo_threshold"].iloc[0] == pytest.approx(threshold, abs=1e-5)
        assert step["beta_dpo_sigma"].iloc[0] == pytest.approx(sigma, abs=1e-5)
        assert step["kept"].sum() == 6  # ⌊0.8·8⌋ of the optimizer batch, not ⌊0.8·4⌋ twice
    state = torch.load(tmp_path / "two" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert int(state["controller.updates"]) == 3  # one update per optimizer step


def test_a_tr_dpo_run_moves_its_reference_and_checkpoints_it(tmp_path):
    summary = run_in_hydra(["debug=fast", "trainer.enable_progress_bar=false", "logger=none", "objective=dpo", "data.format=preference",
                            "objective.ref_sync=soft", "objective.ref_sync_alpha=0.5", "objective.ref_sync_steps=2"], tmp_path)
    assert summary["status"] == "completed" and not summary["reference_logps"]  # nothing precomputed, nothing cached
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]
    steps = summary["global_step"]
    assert int(state["live_reference.synced_at"]) == steps - steps % 2 > 0
    moved = [k for k in state if k.startswith("model.") and not torch.equal(state[k], state["live_reference." + k])]
    assert moved  # the reference follows the policy but is not the policy (α = 0.5)
