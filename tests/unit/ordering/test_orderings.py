import datasets
import numpy as np
import pandas as pd
import pytest

from assay.errors import UserError
from assay.ordering.baselines import RandomOrdering
from assay.ordering.curricula import AntiCurriculum, Blocked, Curriculum, Folding, Interleaved, fold
from assay.ordering.sampler import OrderedSampler

ROWS = np.arange(5, 65)
SCORES = np.random.default_rng(0).random(100)  # indexed by row, as the run passes them
SOURCES = np.array(["add", "copy", "sort"] * 34)[:100].astype(object)

ALL = [Curriculum(seed=0), AntiCurriculum(seed=0), Folding(seed=0), Folding(seed=0, layers=4)]
GROUPED = [Blocked(seed=0), Blocked(seed=0, shuffle_blocks=True), Interleaved(seed=0)]


@pytest.mark.parametrize("ordering", ALL + GROUPED, ids=lambda o: f"{o.name}")
def test_permutation_no_duplicates_seeded(ordering):
    keys = SOURCES if ordering in GROUPED else SCORES
    for epoch in (0, 1):
        p = ordering.order(ROWS, keys, epoch)
        assert sorted(p.tolist()) == ROWS.tolist()  # a permutation: nothing dropped, nothing twice
        assert (p == ordering.order(ROWS, keys, epoch)).all()  # same seed + epoch -> same order


def test_curriculum_sorted_both_ways():
    asc = Curriculum(seed=0).order(ROWS, SCORES, 0)
    assert (np.diff(SCORES[asc]) >= 0).all()
    desc = AntiCurriculum(seed=0).order(ROWS, SCORES, 0)
    assert (np.diff(SCORES[desc]) <= 0).all()


def test_ties_are_shuffled_by_seed_not_dataset_order():
    rows, levels = np.arange(30), np.repeat([3, 1, 2], 10)
    a, b = Curriculum(seed=0).order(rows, levels, 0), Curriculum(seed=1).order(rows, levels, 0)
    assert (np.diff(levels[a]) >= 0).all() and (np.diff(levels[b]) >= 0).all() and not (a == b).all()


def test_folding_structure_by_hand():
    # scores of rows 0..8 rank them 8,7,...,0 ascending; L=3 -> ranked[0::3], ranked[1::3], ranked[2::3]
    rows, scores = np.arange(9), np.arange(9)[::-1].astype(float)
    assert Folding(seed=0, layers=3).order(rows, scores, 0).tolist() == [8, 5, 2, 7, 4, 1, 6, 3, 0]
    assert fold(np.arange(7), 3).tolist() == [0, 3, 6, 1, 4, 2, 5]
    assert Folding(seed=0, layers=1).order(rows, scores, 0).tolist() == list(range(9))[::-1]


def test_folding_emits_l_ascending_passes():
    p = Folding(seed=0, layers=3).order(ROWS, SCORES, 0)
    passes = np.array_split(p, [20, 40])
    for part in passes:
        assert (np.diff(SCORES[part]) >= 0).all()
        assert SCORES[part].min() < 0.2 and SCORES[part].max() > 0.8  # every pass spans the range


def test_blocked_is_contiguous_and_interleaved_round_robins():
    p = Blocked(seed=0).order(ROWS, SOURCES, 0)
    labels = SOURCES[p].tolist()
    assert labels == sorted(labels)  # blocks add | copy | sort, each contiguous
    q = Interleaved(seed=0).order(ROWS, SOURCES, 0)
    assert SOURCES[q][:6].tolist() == ["add", "copy", "sort"] * 2


def test_interleaved_with_unequal_groups_keeps_everything():
    rows, src = np.arange(7), np.array(["a", "a", "a", "a", "a", "b", "c"], dtype=object)
    p = Interleaved(seed=3).order(rows, src, 0)
    assert src[p].tolist()[:3] == ["a", "b", "c"] and sorted(p) == list(rows)


def test_sampler_serves_curricula_and_fingerprints_differ():
    rows = np.arange(40)
    a = OrderedSampler(Curriculum(seed=0), rows, SCORES[:40])
    b = OrderedSampler(Folding(seed=0), rows, SCORES[:40])
    assert sorted(a) == list(rows) and a.fingerprint() != b.fingerprint()


def _train(difficulty):
    return datasets.Dataset.from_dict({"id": [f"x{i}" for i in range(len(difficulty))], "source": ["a"] * len(difficulty), "difficulty": difficulty})


def test_score_sources_resolve(tmp_path):
    train = _train([3, 1, 2])
    assert Curriculum(seed=0).keys(train, np.zeros(3)).tolist() == [3, 1, 2]
    assert Curriculum(seed=0, score_from="selection").keys(train, np.array([0.5, 0.1, 0.2])).tolist() == [0.5, 0.1, 0.2]
    pd.DataFrame({"id": ["x2", "x0", "x1"], "score": [9.0, 7.0, 8.0]}).to_parquet(tmp_path / "s.parquet")
    assert Folding(seed=0, score_from=str(tmp_path / "s.parquet")).keys(train, np.zeros(3)).tolist() == [7, 8, 9]
    assert Blocked(seed=0).keys(train, np.zeros(3)).tolist() == ["a", "a", "a"]


def test_missing_scores_are_one_clear_line(tmp_path):
    train = _train([3, None, 2])
    with pytest.raises(UserError) as e:
        Curriculum(seed=0).keys(train, np.zeros(3))
    assert str(e.value).count("\n") == 0 and "ordering.score_from='difficulty'" in str(e.value) and "1 of 3" in str(e.value) and "x1" in str(e.value)
    pd.DataFrame({"id": ["x0"], "score": [1.0]}).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(UserError, match="no value for 2 of 3 training ids"):
        Curriculum(seed=0, score_from=str(tmp_path / "s.parquet")).keys(_train([1, 2, 3]), np.zeros(3))
    with pytest.raises(UserError, match="must be 'selection', a column"):
        Curriculum(seed=0, score_from="nothing").keys(_train([1, 2, 3]), np.zeros(3))
    with pytest.raises(UserError, match="no value for 1 of 3"):
        Curriculum(seed=0, score_from="selection").keys(_train([1, 2, 3]), np.array([1.0, np.nan, 2.0]))


def test_sampler_reselection_is_resumable():
    rows = np.arange(10)
    a = OrderedSampler(RandomOrdering(seed=0), rows, np.zeros(10))
    fingerprint = a.fingerprint()
    a.reselect(np.array([1, 3, 5]), np.zeros(10), epoch=1)
    a.set_epoch(2)
    a.advance(1)
    b = OrderedSampler(RandomOrdering(seed=0), rows, np.zeros(10))
    b.load_state_dict(a.state_dict())
    assert b.fingerprint() == fingerprint == a.fingerprint()  # the run's identity is its initial order
    assert b.selection_epoch == 1 and list(b) == list(a) and len(list(b)) == 2 and set(a.permutation(2)) == {1, 3, 5}
