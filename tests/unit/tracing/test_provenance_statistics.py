"""The palimpsest test statistics (assay.tracing.statistics, assay.tracing.observe's n-gram index)
against scipy, hand-made inputs and their null distribution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from assay.tracing.observe import document_hits, ngram_index
from assay.tracing.statistics import decile_curve, partition_test, permutation_null, rank_test, spearman_test


def test_spearman_test_matches_scipy_and_its_sign():
    rng = np.random.default_rng(0)
    steps = np.repeat(np.arange(1, 26), 8)  # 25 steps of 8 examples: ties within a step
    values = 0.05 * steps + rng.normal(size=len(steps))
    out = spearman_test(steps, values, permutations=1999, seed=1)
    assert out["rho"] == pytest.approx(spearmanr(steps, values).statistic)
    assert out["p_value"] == pytest.approx(spearmanr(steps, values, alternative="greater").pvalue)
    assert out["p_value_two_sided"] == pytest.approx(spearmanr(steps, values).pvalue)
    assert out["rho"] > 0 and out["p_value"] < 0.01
    # the Monte Carlo p estimates the same one-sided tail (Monte Carlo error ~ sqrt(p/m))
    assert out["p_permutation"] == pytest.approx(out["p_value"], abs=0.01)
    assert spearman_test(steps, -values, permutations=0)["p_value"] > 0.99  # the other direction is no evidence


def test_the_permutation_null_is_the_rank_correlation_of_shuffled_labels():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=50), rng.normal(size=50)
    null = permutation_null(a, b, 4000, seed=3)
    assert abs(null.mean()) < 0.01 and null.std() == pytest.approx(1 / np.sqrt(49), rel=0.05)  # Var ρ_S = 1/(n−1) under H₀
    assert np.abs(null).max() <= 1 + 1e-12


def test_p_values_are_uniform_under_a_random_order():
    """The test's size: with the step labels a random shuffle independent of the values, P(p < α) = α."""
    rng = np.random.default_rng(4)
    values = rng.normal(size=120)
    steps = np.repeat(np.arange(1, 16), 8)
    ps = np.array([spearman_test(rng.permutation(steps), values, permutations=0)["p_value"] for _ in range(2000)])
    for alpha in (0.05, 0.2, 0.5):
        assert np.mean(ps < alpha) == pytest.approx(alpha, abs=0.025)


def test_decile_curve_by_hand():
    steps = np.arange(1, 21)
    values = np.arange(20, dtype=float)
    curve = decile_curve(steps, values)
    assert len(curve) == 10 and [c["n"] for c in curve] == [2] * 10
    assert curve[0] == {"decile": 1, "first_step": 1, "last_step": 2, "n": 2, "mean": 0.5}
    assert curve[-1]["mean"] == 18.5 and curve[-1]["last_step"] == 20


def test_partition_by_hand():
    docs = [[1, 2, 3, 4], [5, 6, 7], [1, 2, 9], [8, 8, 8, 8]]
    index = ngram_index(docs, k=3)
    assert sorted(index[(1, 2)].tolist()) == [0, 2] and index[(1, 2, 3)].tolist() == [0]
    # line [1,2,3,7]: at 0 the longest match is (1,2,3) -> doc 0; at 1 (2,3) -> doc 0; at 2 (3,7) matches nothing
    # line [5,6,9]: at 0 (5,6) -> doc 1 (5,6,9 is nowhere); at 1 (6,9) nothing
    hits = document_hits(index, [[1, 2, 3, 7], [5, 6, 9]], n_docs=4, k=3)
    assert hits.tolist() == [2, 1, 0, 0]


def test_partition_test_finds_a_text_made_of_late_examples():
    rng = np.random.default_rng(5)
    doc_steps = rng.permutation(np.repeat(np.arange(1, 41), 5))  # 40 steps of 5 examples, in a random order
    hits = rng.poisson(1.0 + 2.0 * doc_steps / 40)  # the text matches late examples more
    out = partition_test(hits, doc_steps, permutations=499, seed=0)
    assert out["n_steps"] == 40 and out["rho"] > 0.3 and out["p_value"] <= 0.01 and out["p_value_scipy"] < 0.01
    flat = partition_test(np.zeros(200), doc_steps, permutations=9)
    assert flat["p_value"] == 1.0 and flat["matches"] == 0


def test_partition_counts_only_steps_that_trained_documents():
    """Steps without documents (earlier epochs, when each example's step is its last) would be zeros
    under every map: a large ρ for any text. Only steps with documents count, and the p is the
    permutation p: a text matching documents at random is not significant."""
    rng = np.random.default_rng(6)
    doc_steps = 150 + rng.permutation(np.repeat(np.arange(1, 31), 5))  # steps 151-180 only
    hits = rng.poisson(2.0, size=150)
    out = partition_test(hits, doc_steps, permutations=199, seed=1)
    assert out["n_steps"] == 30 and out["p_value"] > 0.05


def test_rank_test_is_the_exact_rank_p():
    out = rank_test(5.0, np.array([1.0, 2.0, 3.0, 4.0]))
    assert out["p_value"] == pytest.approx(1 / 5) and out["z"] == pytest.approx((5 - 2.5) / np.std([1, 2, 3, 4]))
    assert rank_test(2.0, np.array([1.0, 2.0, 3.0]))["p_value"] == pytest.approx(3 / 4)  # a tie counts against the real order
