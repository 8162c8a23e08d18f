"""Online mixers' update rules against numbers derived by hand from the papers' equations and the
authors' released updates (DoReMi trainer.py, ODM Exp3WeightUpdater, Skill-it mw_trainer.py)."""

import math

import numpy as np
import pytest

from assay.data.weights import temperature_weights
from assay.mixing.base import DomainStats
from assay.mixing.doremi_resample import DoReMiMixer, DoReMiState, doremi_step
from assay.mixing.odm import Exp3State, ODMMixer
from assay.mixing.skill_it import SkillItMixer, graph_from_gradients, skill_it_weights


def test_doremi_step_by_hand():
    """α = (.5, .5), λ = (1, 0), η = 1: softmax(log .5 + λ) = (e, 1)/(e + 1) = (.731059, .268941);
    smoothing c = .1: .9·α' + .05 = (.707953, .292047)."""
    a = doremi_step(np.array([0.5, 0.5]), np.array([1.0, 0.0]), eta=1.0, smoothing=0.0)
    assert a == pytest.approx([math.e / (math.e + 1), 1 / (math.e + 1)])
    b = doremi_step(np.array([0.5, 0.5]), np.array([1.0, 0.0]), eta=1.0, smoothing=0.1)
    assert b == pytest.approx([0.9 * math.e / (math.e + 1) + 0.05, 0.9 / (math.e + 1) + 0.05])


def test_doremi_absent_domain_keeps_its_score_and_average_is_running_mean():
    s = DoReMiState(np.array([0.5, 0.5]))
    w1 = s.update(np.array([0.2, 0.4]), np.array([True, True]), eta=1.0, smoothing=0.0)
    # second update: domain 0 absent -> its score stays 0.2, domain 1 gets 0.1
    w2 = s.update(np.array([np.nan, 0.1]), np.array([False, True]), eta=1.0, smoothing=0.0)
    assert s.scores == pytest.approx([0.2, 0.1])
    expect1 = np.exp([0.2, 0.4]) / np.exp([0.2, 0.4]).sum()
    expect2 = expect1 * np.exp([0.2, 0.1]) / (expect1 * np.exp([0.2, 0.1])).sum()
    assert w1 == pytest.approx(expect1) and w2 == pytest.approx(expect2)
    assert s.average == pytest.approx((expect1 + expect2) / 2)


def test_doremi_mixer_uses_clipped_excess():
    m = DoReMiMixer(["a", "b"], np.array([0.5, 0.5]), eta=2.0, smoothing=0.0)
    out = m.update(DomainStats(np.array([3, 2]), {"train_loss": np.array([1.0, 1.0]), "excess_loss": np.array([0.5, 0.0])}))
    e = np.exp([1.0, 0.0])
    assert out["weight"] == pytest.approx(e / e.sum())
    assert m.outputs()["average_weights"]["a"] == pytest.approx(e[0] / e.sum())


def _exp3_released(rewards_seq, k):
    """A plain-Python transcription of the released EXP3 update's arithmetic (one arm per update)."""
    probs, cum, eps = [1 / k] * k, [0.0] * k, 1 / k
    for t, (arm, r) in enumerate(rewards_seq, start=1):
        cum[arm] += r / probs[arm]
        prev, eps = eps, min(1 / k, math.sqrt(math.log(k) / (k * t)))
        z = sum(math.exp(c * prev) for c in cum)
        w = [math.exp(c * prev) * (1 - k * eps) / z + eps for c in cum]
        probs = [x / sum(w) for x in w]
    return probs


def test_exp3_by_hand():
    """k = 2. Update 1: R̂ = (.8, 0), ε_1 = min(.5, sqrt(ln2/2)) = .5 -> (1 - 2ε) = 0 -> uniform.
    Update 2: R̂ = (.8, .4), ε_2 = sqrt(ln2/4) = .416277, softmax(.5·R̂) = (.549834, .450166),
    π = .167445·softmax + .416277 = (.508344, .491656)."""
    s = Exp3State(np.array([0.5, 0.5]))
    p1 = s.update(np.array([0.4, 0.0]), np.array([True, False]))
    assert p1 == pytest.approx([0.5, 0.5]) and s.cumulative == pytest.approx([0.8, 0.0])
    p2 = s.update(np.array([0.0, 0.2]), np.array([False, True]))
    assert s.eps == pytest.approx(math.sqrt(math.log(2) / 4))
    assert p2 == pytest.approx([0.508344, 0.491656], abs=1e-6)


def test_exp3_matches_the_released_update_over_many_steps():
    rng = np.random.default_rng(0)
    seq = [(int(rng.integers(3)), float(rng.uniform(0, 0.5))) for _ in range(60)]
    s = Exp3State(np.ones(3))
    for arm, r in seq:
        rewards, present = np.zeros(3), np.zeros(3, dtype=bool)
        rewards[arm], present[arm] = r, True
        s.update(rewards, present)
    assert s.probabilities == pytest.approx(_exp3_released(seq, 3), rel=1e-9)


def test_exp3_moving_average_variant():
    s = Exp3State(np.array([0.5, 0.5]))
    s.update(np.array([0.4, 0.0]), np.array([True, False]), smoothing=0.9)
    assert s.cumulative == pytest.approx([0.1 * 0.8, 0.0])


def test_odm_reward_is_scaled_loss_times_batch_share():
    m = ODMMixer(["a", "b"], np.array([0.5, 0.5]), reward_scale=10.0, smoothing=None)
    out = m.update(DomainStats(np.array([3, 1]), {"train_loss": np.array([4.0, 2.0])}))
    assert out["reward"] == pytest.approx([0.4 * 0.75, 0.2 * 0.25])
    assert m.state.cumulative == pytest.approx([0.3 / 0.5, 0.05 / 0.5])


def test_skill_it_by_hand():
    """p0 = (.5, .5), A = [[1, .5], [0, 1]], L = (2, 1), η = 1: A·L = (2.5, 1) -> (e^2.5, e)/(e^2.5 + e) = (.817574, .182426)."""
    w = skill_it_weights(np.array([0.5, 0.5]), np.array([[1.0, 0.5], [0.0, 1.0]]), [np.array([2.0, 1.0])], eta=1.0, window=3)
    assert w == pytest.approx([math.exp(2.5) / (math.exp(2.5) + math.e), math.e / (math.exp(2.5) + math.e)])
    # the window sums only the last evaluations: an old (10, 0) outside a window of 2 changes nothing
    w2 = skill_it_weights(np.array([0.5, 0.5]), np.array([[1.0, 0.5], [0.0, 1.0]]), [np.array([10.0, 0.0]), np.array([1.0, 0.5]), np.array([1.0, 0.5])], eta=1.0, window=2)
    assert w2 == pytest.approx(w)


def test_skill_it_mixer_normalises_by_first_loss():
    m = SkillItMixer(["a", "b"], np.array([0.5, 0.5]), graph=np.eye(2), eta=1.0, window=3, normalise_loss=True)
    m.update(DomainStats(np.zeros(2), {"train_loss": np.zeros(2), "val_loss": np.array([2.0, 4.0])}))
    assert m.weights == pytest.approx([0.5, 0.5])  # both at 1 x their first loss
    m.update(DomainStats(np.zeros(2), {"train_loss": np.zeros(2), "val_loss": np.array([1.0, 4.0])}))
    e = np.exp([1.0 + 0.5, 1.0 + 1.0])
    assert m.weights == pytest.approx(e / e.sum())


def test_graph_probe_by_hand():
    """g = [[2,0],[1,1]] (training gradients), h = [[1,0],[0,2]] (validation): <g_i,h_j> = [[2,0],[1,2]],
    own = diag = (2, 2) -> A = [[1, 0], [.5, 1]]."""
    assert graph_from_gradients(np.array([[2.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 2.0]])) == pytest.approx(np.array([[1.0, 0.0], [0.5, 1.0]]))


def test_temperature_weights():
    assert temperature_weights(np.array([100.0, 25.0]), 2.0) == pytest.approx([2 / 3, 1 / 3])
