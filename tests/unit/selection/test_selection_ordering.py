import numpy as np
import pytest
import datasets

from assay.errors import UserError
from assay.ordering.baselines import RandomOrdering, SequentialOrdering
from assay.ordering.sampler import OrderedSampler
from assay.selection import SelectionContext, top_k_mask
from assay.selection.baselines import KeepAll, RandomSelection
from assay.selection.selectors import Top


def pool(n):
    return SelectionContext(datasets.Dataset.from_list([{"id": f"x{i}"} for i in range(n)]))


def test_random_selection_fraction_and_count():
    sel = RandomSelection(selector=Top(fraction=0.25), seed=0).select(pool(100))
    assert sel.kept.sum() == 25
    assert RandomSelection(selector=Top(count=7), seed=0).select(pool(100)).kept.sum() == 7
    assert (RandomSelection(selector=Top(fraction=0.3), seed=1).select(pool(50)).kept == RandomSelection(selector=Top(fraction=0.3), seed=1).select(pool(50)).kept).all()


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_fraction_outside_range(fraction):
    with pytest.raises(UserError, match=r"selection.selector.fraction.*\(0, 1\]"):
        RandomSelection(selector=Top(fraction=fraction))


def test_empty_selection_is_an_error():
    with pytest.raises(UserError, match="kept no examples"):
        RandomSelection(selector=Top(fraction=0.01), seed=0).select(pool(50))


def test_keep_all_and_top_k():
    assert KeepAll().select(pool(3)).kept.all()
    assert top_k_mask(np.array([0.1, 0.9, 0.5, 0.9]), 2).tolist() == [False, True, False, True]


def test_orderings_are_seeded_permutations():
    rows = np.arange(10, 30)
    o = RandomOrdering(seed=4)
    p0, p1 = o.order(rows, np.zeros(20), 0), o.order(rows, np.zeros(20), 1)
    assert sorted(p0) == list(rows) and sorted(p1) == list(rows)
    assert not (p0 == p1).all() and (p0 == o.order(rows, np.zeros(20), 0)).all()
    assert (SequentialOrdering().order(rows, np.zeros(20), 3) == rows).all()


def test_sampler_resumes_mid_epoch_and_shards_after_ordering():
    rows = np.arange(12)
    s = OrderedSampler(RandomOrdering(seed=0), rows, np.zeros(12))
    full = list(s)
    s.advance(5)
    state = s.state_dict()
    t = OrderedSampler(RandomOrdering(seed=0), rows, np.zeros(12))
    t.load_state_dict(state)
    assert list(t) == full[5:]
    t.set_epoch(1)
    assert len(list(t)) == 12 and list(t) != full
    shards = [list(OrderedSampler(RandomOrdering(seed=0), rows, np.zeros(12), rank=r, world=3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(rows) and shards[0] == full[0::3]


def test_fingerprint_tracks_the_order():
    rows = np.arange(12)
    a = OrderedSampler(RandomOrdering(seed=0), rows, np.zeros(12)).fingerprint()
    assert a == OrderedSampler(RandomOrdering(seed=0), rows, np.zeros(12)).fingerprint()
    assert a != OrderedSampler(RandomOrdering(seed=1), rows, np.zeros(12)).fingerprint()
