"""The domain-drawing sampler: weights realised, schedules, caps, token weights, bit-identical resume."""

import numpy as np
import pytest

from assay.mixing.sampler import DomainSampler
from assay.ordering.baselines import RandomOrdering

DOMAINS = ["a", "b", "c"]


def make(sizes=(300, 200, 100), weights=(0.2, 0.3, 0.5), batch=8, caps=None, to_examples=None, base=None):
    row_domains = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    rows = np.arange(len(row_domains))
    w = np.asarray(weights, dtype=np.float64)
    return DomainSampler(RandomOrdering(seed=0), rows, np.zeros(len(rows)), row_domains, DOMAINS,
                         base or (lambda b: w), batch, seed=3, caps=caps, to_examples=to_examples), row_domains


def take(sampler, n):
    out = []
    for i, r in enumerate(iter(sampler)):
        if i >= n:
            break
        out.append(r)
    return np.array(out)


def test_draws_follow_the_weights():
    s, dom = make()
    rows = take(s, len(s))
    share = np.bincount(dom[rows], minlength=3) / len(rows)
    assert share == pytest.approx([0.2, 0.3, 0.5], abs=0.06)


def test_rows_of_a_domain_are_a_permutation_pass_after_pass():
    s, dom = make(sizes=(10, 10, 10), weights=(0, 0, 1.0))
    rows = np.concatenate([s.block_rows(b) for b in range(5)])  # 40 draws of c = 4 passes over its 10 rows
    assert set(dom[rows]) == {2}
    assert sorted(rows[:10].tolist()) == list(range(20, 30)) and sorted(rows[10:20].tolist()) == list(range(20, 30))


def test_token_weights_become_example_weights():
    """Token shares (.5, .5, 0) with 10 vs 40 tokens per example: example draws 4:1 (0.8, 0.2)."""
    s, dom = make(sizes=(400, 400, 10), weights=(0.5, 0.5, 0.0), to_examples=np.array([1 / 10, 1 / 40, 1.0]))
    rows = np.concatenate([s.block_rows(b) for b in range(200)])
    share = np.bincount(dom[rows], minlength=3) / len(rows)
    assert share == pytest.approx([0.8, 0.2, 0.0], abs=0.03)


def test_cap_removes_a_domain_once_reached():
    """c may be drawn at most 2 epochs x 10 rows = 20 times; afterwards only a and b are drawn."""
    s, dom = make(sizes=(500, 500, 10), weights=(0.1, 0.1, 0.8), caps=np.array([10**9, 10**9, 20]))
    rows = np.concatenate([s.block_rows(b) for b in range(40)])
    assert (dom[rows] == 2).sum() <= 20 + 8  # checked per batch: at most one batch past the cap
    assert (dom[rows[-80:]] == 2).sum() == 0


def test_schedule_changes_weights_by_batch():
    s, dom = make(base=lambda b: np.array([1.0, 0.0, 0.0]) if b < 5 else np.array([0.0, 0.0, 1.0]))
    assert set(dom[s.block_rows(4)]) == {0} and set(dom[s.block_rows(5)]) == {2}


def test_resume_replays_the_weight_history_bit_identically():
    """Run A: weights change at two points while the loader has drawn ahead; at a 'checkpoint' its
    state is saved; B loads it and must serve exactly A's remaining rows."""
    a, _ = make()
    it = iter(a)
    served = [next(it) for _ in range(24)]  # 3 batches drawn (the loader has started the 3rd)
    a.advance(16)  # two batches consumed
    a.set_weights(np.array([0.9, 0.05, 0.05]))
    served += [next(it) for _ in range(16)]
    a.advance(16)
    a.set_weights(np.array([0.05, 0.05, 0.9]))
    state = a.state_dict()
    rest_a = [next(it) for _ in range(200)]

    b, _ = make()
    b.load_state_dict(state)
    rest_b = take(b, 208)  # b restarts at the first unconsumed batch (index 4)
    assert np.array_equal(np.array(served[32:] + rest_a), rest_b)
    assert state["fingerprint"] == b.fingerprint()


def test_weights_apply_from_the_next_undrawn_batch():
    s, dom = make(weights=(1.0, 0.0, 0.0))
    it = iter(s)
    _ = [next(it) for _ in range(9)]  # batch 0 served, batch 1 started
    first = s.set_weights(np.array([0.0, 1.0, 0.0]))
    assert first == 2
    rest = [next(it) for _ in range(7 + 8)]
    assert set(dom[rest[:7]]) == {0} and set(dom[rest[7:]]) == {1}
