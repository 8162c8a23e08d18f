"""The graded preference task, its ground-truth rewards, the reward-gap noise model and the mechanism
summary of a run's per-pair records, each against hand-derived values."""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd
import pytest

from assay.data.noise import Corrupt, GapFlip, PairwiseFlip
from assay.data.rewards import skill_reward, symbol_edit_distance
from assay.data.skills import graded_pairs, pair_kind
from assay.data.sources import SkillsData
from assay.dynamics.mechanism import auroc, mechanism_summary


def test_edit_distance_and_reward_by_hand():
    assert symbol_edit_distance(list("kdam"), list("kdam")) == 0
    assert symbol_edit_distance(list("kdam"), list("kdbm")) == 1  # one substitution
    assert symbol_edit_distance(list("abc"), list("ab")) == 1  # one deletion
    assert symbol_edit_distance([], list("xyz")) == 3
    assert skill_reward("8 5", "8 5") == 1.0
    assert skill_reward("m a d k", "m a b k") == pytest.approx(0.75)  # near miss of 4 symbols: 1 - 1/4
    assert skill_reward("1 2 3", "1 2") == pytest.approx(2 / 3)  # one missing symbol: 1 - 1/3
    assert skill_reward("1 2", "x y z w") == pytest.approx(0.0)  # lev = 4 = the longer length
    assert skill_reward("3", "") == 0.0


def test_pair_kinds_grade_the_rejected_answer():
    assert pair_kind("exact_vs_near") == (0, 1) and pair_kind("near_vs_far") == (1, 2)
    data = SkillsData(format="preference", domains=["copy", "add"], train_per_domain=200, val_per_domain=5, test_per_domain=5,
                      pair_kinds=["exact_vs_near", "exact_vs_garbage", "near_vs_far"], seed=3)
    train = data.load()["train"].to_pandas()
    assert set(train["pair_kind"]) == {"exact_vs_near", "exact_vs_garbage", "near_vs_far"}
    for kind, rows in train.groupby("pair_kind"):
        c, j = pair_kind(kind)
        as_rated = (rows["chosen"] == rows["responses"].map(lambda r: r[c])) & (rows["rejected"] == rows["responses"].map(lambda r: r[j]))
        swapped = (rows["chosen"] == rows["responses"].map(lambda r: r[j])) & (rows["rejected"] == rows["responses"].map(lambda r: r[c]))
        assert (as_rated | swapped).all() and as_rated.mean() > 0.8
        assert (rows.loc[swapped, "reward_gap"] > 0).all()  # swapped only where the lower-rated one is closer
    # ground truth: the chosen response is never worse, and the gap is chosen - rejected
    assert (train["reward_gap"] == train["chosen_reward"] - train["rejected_reward"]).all()
    assert (train["reward_gap"] >= 0).all()
    mean_gap = train.groupby("pair_kind")["reward_gap"].mean()
    assert mean_gap["exact_vs_garbage"] > mean_gap["exact_vs_near"]  # garbage is further from the answer
    assert (train.loc[train.pair_kind == "near_vs_far", "chosen_reward"] < 1).all()  # both wrong
    # held-out pairs stay the standard exact_vs_near, so every run is measured on the same pairs
    test = data.load()["test"].to_pandas()
    assert (test["chosen"] == test["answer"]).all() and "pair_kind" not in test


def test_default_pairs_are_unchanged():
    a = SkillsData(format="preference", domains=["sort"], train_per_domain=30, val_per_domain=3, test_per_domain=3, seed=0).load()["train"]
    assert a["chosen"] == [r[0] for r in a["responses"]] and a["rejected"] == [r[1] for r in a["responses"]]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"pair_kinds": ["near_vs_exact"]}, "chosen rated above rejected"),
        ({"pair_kinds": ["exact-near"]}, "chosen rated above rejected"),
        ({"pair_kinds": []}, "at least one"),
        ({"pair_kinds": ["exact_vs_far"], "format": "sft"}, "needs data.format=preference"),
        ({"pair_kinds": ["exact_vs_far"], "rating_gaps": [1.0]}, "set one of them"),
    ],
)
def test_bad_pair_kinds_fail_in_one_line(overrides, message):
    from assay.errors import UserError

    with pytest.raises(UserError, match=message):
        SkillsData(**{"format": "preference", **overrides})


def _pairs(gaps):
    n = len(gaps)
    return datasets.Dataset.from_dict({
        "id": [str(i) for i in range(n)], "prompt": ["p"] * n, "chosen": [f"c{i}" for i in range(n)], "rejected": [f"r{i}" for i in range(n)],
        "chosen_reward": [1.0] * n, "rejected_reward": [1.0 - g for g in gaps], "reward_gap": list(gaps),
    })


def test_gap_flip_probabilities_by_hand():
    noise = GapFlip(p=0.25, temperature=0.5, seed=0)
    gap = np.array([0.0, 0.5, 1.0, 1.0])
    w = np.exp(-gap / 0.5)  # 1, e^-1, e^-2, e^-2
    expected = 0.25 * 4 * w / w.sum()
    assert noise.flip_probabilities(gap) == pytest.approx(expected)
    assert noise.flip_probabilities(gap).mean() == pytest.approx(0.25)  # the expected flip rate is p


def test_gap_flip_flips_close_pairs_and_keeps_the_ground_truth():
    gaps = [0.05] * 500 + [0.9] * 500
    out = GapFlip(p=0.2, temperature=0.2, seed=1).apply(_pairs(gaps), "preference").to_pandas()
    flipped = out["is_flipped"].to_numpy()
    assert 0.15 < flipped.mean() < 0.25
    assert flipped[:500].mean() > 10 * max(flipped[500:].mean(), 1e-3)  # close pairs flip far more often
    f = out[out.is_flipped]
    assert (f["chosen"].str.startswith("r") & f["rejected"].str.startswith("c")).all()
    assert (f["chosen_reward"] < f["rejected_reward"]).all()  # rewards follow their texts
    assert (out["reward_gap"] == np.array(gaps)).all()  # the true gap is kept


def test_uniform_flip_swaps_rewards_too_and_gap_flip_needs_gaps():
    from assay.errors import UserError

    out = PairwiseFlip(p=0.4, seed=2).apply(_pairs([0.5] * 50), "preference").to_pandas()
    assert (out.loc[out.is_flipped, "rejected_reward"] == 1.0).all()
    with pytest.raises(UserError, match="reward_gap"):
        GapFlip(p=0.2).apply(_pairs([0.5] * 4).remove_columns("reward_gap"), "preference")


def test_pointwise_noise_rescores_the_corrupted_chosen_response():
    data = SkillsData(format="preference", domains=["copy"], train_per_domain=80, val_per_domain=2, test_per_domain=2, seed=0)
    train = data.load()["train"]
    out = Corrupt(p=0.3, seed=0, kinds=["wrong_answer"]).apply(train, "preference").to_pandas()
    bad = out[out.is_corrupted]
    assert len(bad) > 0 and (bad["chosen_reward"] < 1.0).all()
    assert (out.loc[~out.is_corrupted, "chosen_reward"] == 1.0).all()


def test_mechanism_summary_on_a_constructed_store():
    # two steps of four pairs; pair 0 of each step is flipped. Dr. DPO gives it the least weight in
    # step 1 and the most in step 2; the loss ranks it highest both times; β-DPO drops it in step 1.
    store = pd.DataFrame({
        "step": [1] * 4 + [2] * 4,
        "is_flipped": [True, False, False, False] * 2,
        "loss": [2.0, 0.5, 0.4, 0.3, 3.0, 0.2, 0.1, 0.1],
        "dr_weight": [0.1, 0.3, 0.3, 0.3, 0.4, 0.2, 0.2, 0.2],
        "kept": [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        "beta": [0.1] * 4 + [0.12] * 4,
    })
    summary, steps = mechanism_summary(store, low_share=0.25)
    assert summary["mechanism/auroc_loss"] == pytest.approx(1.0)
    assert summary["mechanism/auroc_dr_weight"] == pytest.approx(0.5)  # 1.0 in step 1, 0.0 in step 2
    # step 1: dropped pair is the flipped one (AUROC 1); step 2: the dropped pair is clean (flipped
    # pair kept, ranked level with two clean kept pairs and above one dropped: (0 + 0.5·2)/3 = 1/3)
    assert steps["auroc_beta_dpo_keep"].tolist() == pytest.approx([1.0, 1 / 3])
    assert steps["flipped_share_lowest_weight"].tolist() == [1.0, 0.0]
    assert summary["mechanism/beta_first"] == pytest.approx(0.1) and summary["mechanism/beta_last"] == pytest.approx(0.12)
    assert summary["mechanism/flip_rate"] == pytest.approx(0.25)
    assert mechanism_summary(store.assign(is_flipped=False))[0] == {}
    # a β-DPO run records the fixed β_0 as ``beta`` and the batch β the loss used as ``beta_dpo_beta``:
    # the trajectory is the latter
    with_batch_beta = mechanism_summary(store.assign(beta=0.1, beta_dpo_beta=[0.3] * 4 + [0.05] * 4), low_share=0.25)[0]
    assert with_batch_beta["mechanism/beta_first"] == pytest.approx(0.3) and with_batch_beta["mechanism/beta_last"] == pytest.approx(0.05)


def test_auroc_ties_count_half():
    assert auroc(np.array([1, 0, 0], bool), np.array([1.0, 1.0, 0.0])) == pytest.approx(0.75)


def test_a_coinciding_response_falls_back_to_the_next_lower_rated_one():
    row = {"id": "copy/train/00000", "answer": "a b", "responses": ["a b", "a c", "a b", "x y z"]}
    (pair,) = graded_pairs([row], ["exact_vs_far"], seed=0)
    assert (pair["chosen"], pair["rejected"]) == ("a b", "x y z")
