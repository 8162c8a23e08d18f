import datasets
import numpy as np
import pandas as pd
import pytest

from assay.errors import UserError
from assay.ordering.curricula import AntiCurriculum, Blocked, Curriculum, Folding, Interleaved, UpsampleEnd, fold
from assay.ordering.sampler import OrderedSampler

ROWS = np.arange(5, 65)
SCORES = np.random.default_rng(0).random(100)  # indexed by row, as the run passes them
SOURCES = np.array(["add", "copy", "sort"] * 34)[:100].astype(object)

ALL = [Curriculum(seed=0), AntiCurriculum(seed=0), Folding(seed=0), Folding(seed=0, layers=4)]
GROUPED = [Blocked(seed=0), Blocked(seed=0, shuffle_blocks=True), Interleaved(seed=0), UpsampleEnd(seed=0, sources=["add"])]


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


def test_upsample_end_raises_share_in_tail():
    o = UpsampleEnd(seed=0, sources=["add"], last_fraction=0.25, factor=3.0)
    p = o.order(ROWS, SOURCES, 0)
    tail, head = p[-15:], p[:-15]
    base = np.mean(SOURCES[ROWS] == "add")
    assert np.mean(SOURCES[tail] == "add") > 2 * base > np.mean(SOURCES[head] == "add")
    with pytest.raises(UserError, match="ordering.sources"):
        UpsampleEnd(seed=0, sources=["nope"]).order(ROWS, SOURCES, 0)
    with pytest.raises(UserError, match="ordering.sources"):
        UpsampleEnd(seed=0)


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


def test_upsample_end_places_the_end_phase_in_the_last_epochs_of_the_run():
    """With the run's length known (4 epochs of 60 rows, last 25% = the whole last epoch), epochs 0-2
    are plain permutations and the last epoch carries the raised share, repeating `add` rows once
    they run out (3x their pool share of 1/3 = every position)."""
    rows = np.arange(60)
    labels = np.array(["add", "copy", "sort"] * 20)
    o = UpsampleEnd(seed=0, sources=["add"], last_fraction=0.25, factor=3.0).for_run(240)
    for epoch in range(3):
        assert sorted(o.order(rows, labels, epoch)) == list(rows)
    last = o.order(rows, labels, 3)
    assert len(last) == 60 and np.all(labels[last] == "add")
    # an end phase of 10% starts 6 rows before the end of the last epoch: only those are upsampled
    o = UpsampleEnd(seed=0, sources=["add"], last_fraction=0.1, factor=2.0).for_run(240)
    last = o.order(rows, labels, 3)
    assert sorted(last) == list(rows) and np.sum(labels[last[-24:]] == "add") == 16  # round(2/3 x 24)
    assert o.end_phase_rows(60, 3) == 24 and o.end_phase_rows(60, 2) == 0
    # unknown run length: every epoch ends with its own phase (the fallback)
    assert UpsampleEnd(seed=0, sources=["add"], last_fraction=0.25).end_phase_rows(60, 7) == 15
    with pytest.raises(UserError, match="ordering.horizon_rows"):
        UpsampleEnd(seed=0, sources=["add"], horizon_rows=0)
