"""TSDS (Liu et al. 2024, as DataFlex runs it): the KNN-KDE sweep's probabilities by hand, and sampling."""

import datasets
import numpy as np
import pytest

from assay.ot.knn_transport import kernel_density, nearest, tsds_probabilities
from assay.selection import SelectionContext
from assay.selection.scorers.tsds import Tsds, gumbel_top_k_scores
from assay.selection.selectors import Top

LINE = np.array([[1.0], [2.0], [3.0], [4.0]])  # candidates at distance 1..4 from the query at 0
QUERY = np.array([[0.0]])
NEVER = 1e9  # a C so large that the sweep never stops early


@pytest.mark.parametrize("alpha,c,expected", [
    # sweep with σ = 0 (every kde = 1), one query (M = 1), distances d = 1, 2, 3, 4; stop when (α/C)·cost ≥ (1 − α):
    #   pop level 1: cost = d₂·1 − d₁ = 1;  pop level 2: cost = d₃·2 − (d₁+d₂) = 3;  pop level 3: cost = d₄·3 − 6 = 6
    # α = 0.9, C = 1: 0.9·1 ≥ 0.1 stops at level 1 with no neighbour passed: p = 1/1 to the nearest
    (0.9, 1.0, [1.0, 0.0, 0.0, 0.0]),
    # α = 0.5, C = 2: 0.25·1 < 0.5, 0.25·3 ≥ 0.5 stops at level 2 after one: 1/2 to the nearest, the rest (1/2) to the next
    (0.5, 2.0, [0.5, 0.5, 0.0, 0.0]),
    # α = 0.6, C = 5 (DataFlex's): 0.12·1, 0.12·3 < 0.4, 0.12·6 ≥ 0.4 stops at level 3 after two: 1/3, 1/3, rest 1/3
    (0.6, 5.0, [1 / 3, 1 / 3, 1 / 3, 0.0]),
    # never stopping: the heap empties at K − 2 = 2 at level 3: 1/3 to each of the three nearest, rest 0
    (0.6, NEVER, [1 / 3, 1 / 3, 1 / 3, 0.0]),
])
def test_sweep_by_hand_on_a_line(alpha, c, expected):
    assert tsds_probabilities(LINE, QUERY, sigma=0.0, alpha=alpha, c=c) == pytest.approx(expected, abs=1e-12)


def test_the_density_estimate_splits_near_duplicates():
    # a at 1, twins b b' at 2, c at 3; σ = 0.75: the twins are each other's neighbours (kernel 1 + 1 = 2), a and c
    # are 1 apart from them (1 − 1/0.5625 < 0): kde = [1, 2, 2, 1]. Levels Σ 1/kde: 1, 1.5, 2 (the heap empties at 2):
    # p = 1/(2·kde) over the three nearest = [1/2, 1/4, 1/4], c nothing. Without KDE (σ = 0) each gets 1/3.
    twins = np.array([[1.0], [2.0], [2.0], [3.0]])
    assert kernel_density(twins, 4, 0.75).tolist() == [1.0, 2.0, 2.0, 1.0]
    assert tsds_probabilities(twins, QUERY, sigma=0.75, c=NEVER) == pytest.approx([0.5, 0.25, 0.25, 0.0], abs=1e-12)
    assert tsds_probabilities(twins, QUERY, sigma=0.0, c=NEVER) == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0], abs=1e-12)


def test_two_queries_share_the_level():
    # queries at 0 and 10; candidates 1, 2, 11, 13. Lists: q0 → (1, 2, 11, 13) at d 1, 2, 11, 13; q1 → (11, 13, 2, 1) at
    # d 1, 3, 8, 9. α = 0.6, C = 1, M = 2: stop when 0.6·Σcost ≥ 0.8. Pop q0 at level 1: cost 2 − 1 = 1 (0.6 < 0.8);
    # pop q1 at level 1: cost 3 − 1 = 2, Σ = 3 (1.8 ≥ 0.8) stops at level 1: each query gives its 1/2 to its nearest.
    pool = np.array([[1.0], [2.0], [11.0], [13.0]])
    assert tsds_probabilities(pool, np.array([[0.0], [10.0]]), sigma=0.0, alpha=0.6, c=1.0) == pytest.approx([0.5, 0.0, 0.5, 0.0])
    d, i = nearest(pool, np.array([[10.0]]), 4)
    assert i.tolist() == [[2, 3, 1, 0]] and d.tolist() == [[1.0, 3.0, 8.0, 9.0]]


def test_partial_sort_agrees_with_the_full_sort():
    rng = np.random.default_rng(0)
    pool, queries = rng.standard_normal((50, 3)), rng.standard_normal((7, 3))
    d5, i5 = nearest(pool, queries, 5)
    d_all, i_all = nearest(pool, queries, 50)
    assert (i5 == i_all[:, :5]).all() and np.allclose(d5, d_all[:, :5])
    assert np.allclose(d_all, np.sort(np.linalg.norm(queries[:, None] - pool[None], axis=2), axis=1))


def test_gumbel_top_k_samples_in_proportion():
    probs = np.array([0.5, 0.3, 0.2, 0.0])
    firsts = np.bincount([int(np.argmax(gumbel_top_k_scores(probs, seed))) for seed in range(3000)], minlength=4) / 3000
    assert firsts == pytest.approx(probs, abs=0.03) and firsts[3] == 0
    assert np.isneginf(gumbel_top_k_scores(probs, 0)[3])


def splits(pool, target):
    def part(vectors, prefix):
        return datasets.Dataset.from_dict({
            "id": [f"{prefix}{i}" for i in range(len(vectors))], "source": ["x"] * len(vectors),
            "prompt": ["q"] * len(vectors), "completion": ["a"] * len(vectors), "embedding": np.asarray(vectors).tolist(),
        })
    return datasets.DatasetDict({"train": part(pool, "p"), "val": part(target, "t")})


def test_scorer_keeps_the_targets_cluster():
    rng = np.random.default_rng(0)
    near_target = np.array([1.0, 0.0]) + 0.05 * rng.standard_normal((10, 2))
    elsewhere = np.array([0.0, 1.0]) + 0.05 * rng.standard_normal((10, 2))
    ds = splits(np.vstack([near_target, elsewhere]), np.array([1.0, 0.0]) + 0.05 * rng.standard_normal((3, 2)))
    ctx = SelectionContext(ds["train"], splits=ds)
    # α = 0.9 weighs the transport: the sweep stops before any target example reaches the other cluster (√2 away)
    probs = Tsds(embedder="column", neighbours=20, alpha=0.9, sample=False).score(ctx)
    assert probs.sum() == pytest.approx(1.0) and probs[10:].sum() == 0.0
    kept = Tsds(embedder="column", neighbours=20, alpha=0.9, selector=Top(count=5), seed=3).select(ctx).kept
    assert kept[:10].sum() == 5
    # at DataFlex's α = 0.6 the diversity term spreads mass to the far cluster too (within-cluster distances of
    # 0.05 cost almost nothing against (1 − α)·M), still less than to the target's
    spread = Tsds(embedder="column", neighbours=20, sample=False).score(ctx)
    assert 0 < spread[10:].sum() < spread[:10].sum()


def test_config_and_bad_values(compose_cfg):
    from assay.config import validate
    from assay.errors import explain

    spec = validate(compose_cfg(["selection=tsds", "selection.embedder=column", "selection.alpha=0.5", "selection.sample=false"]))
    assert isinstance(spec.selection, Tsds) and spec.selection.alpha == 0.5 and not spec.selection.sample
    for override, name in (("selection.alpha=1", "selection.alpha"), ("selection.neighbours=1", "selection.neighbours"),
                           ("selection.sigma=-1", "selection.sigma"), ("selection.c=0", "selection.c")):
        with pytest.raises(Exception) as err:
            validate(compose_cfg(["selection=tsds", override]))
        line = explain(err.value)
        assert "\n" not in line and name in line, line
