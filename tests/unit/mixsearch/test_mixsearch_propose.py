"""Proposers recover known optima; DDO and AutoScale on synthetic power-law problems; swarm generators."""

from __future__ import annotations

import numpy as np
import pytest

from assay.errors import UserError
from assay.mixsearch.ddo import autoscale_predict, ddo_design, ddo_solve, power_law, DDOResult
from assay.mixsearch.propose import propose
from assay.mixsearch.regressors import make_regressor
from assay.mixsearch.regressors.base import Regressor
from assay.mixsearch.swarm import dirichlet_swarm, regmix_swarm

DOMAINS = ["a", "b", "c", "d"]


class Bowl(Regressor):
    """A known smooth target with its minimum at x*."""

    name = "bowl"

    def __init__(self, target):
        super().__init__()
        self.target = np.asarray(target)

    def n_params(self, m):
        return 0

    def fit(self, X, y, scale=None):
        return self  # known, nothing to fit

    def predict(self, X, scale=None):
        return ((np.asarray(X) - self.target) ** 2).sum(axis=1) + 1.0


def test_simulation_and_optimiser_recover_a_known_optimum():
    star = np.array([0.5, 0.3, 0.15, 0.05])
    model = Bowl(star)
    prior = np.full(4, 0.25)
    opt = propose(model, DOMAINS, "optimize", prior)
    np.testing.assert_allclose(opt.weights, star, atol=1e-4)
    sim = propose(model, DOMAINS, "simulation", prior, n_samples=50_000, top_k=32, strength=4.0)
    np.testing.assert_allclose(sim.weights, star, atol=0.05)


def test_optimiser_respects_caps_and_names_the_binding_one():
    model = Bowl([0.7, 0.1, 0.1, 0.1])
    caps = np.array([0.4, 1.0, 1.0, 1.0])
    res = propose(model, DOMAINS, "optimize", np.full(4, 0.25), caps=caps)
    assert res.weights[0] == pytest.approx(0.4, abs=1e-4)
    np.testing.assert_allclose(res.weights[1:], 0.2, atol=1e-4)  # the excess spreads evenly (projection)
    assert res.active_caps == ["a<=0.4"]


def test_simulation_respects_caps_by_rejection_and_by_projection():
    # Optimum a = 0.7 lies beyond a's cap 0.4: every kept sample has a <= 0.4, so their mean does too, and the
    # best ones push a to its cap. A cap of 0.05 (far below the prior's 0.25) leaves < top_k Dirichlet samples
    # under it, so the samples are projected onto the capped simplex instead (the second branch).
    model = Bowl([0.7, 0.1, 0.1, 0.1])
    res = propose(model, DOMAINS, "simulation", np.full(4, 0.25), caps=np.array([0.4, 1.0, 1.0, 1.0]), n_samples=20_000, top_k=16, strength=4.0)
    assert res.weights[0] <= 0.4 + 1e-9 and res.weights[0] > 0.35
    tight = propose(model, DOMAINS, "simulation", np.full(4, 0.25), caps=np.array([0.05, 1.0, 1.0, 1.0]), n_samples=2_000, top_k=512, strength=50.0)
    assert tight.weights[0] <= 0.05 + 1e-9
    assert tight.active_caps == ["a<=0.05"]


def test_exact_convex_proposal_for_the_log_linear_law():
    # L = c + exp(t·x): minimised by the domain with the smallest t, up to its cap, then the next.
    X = dirichlet_swarm(np.full(4, 0.25), 40, 0)
    t = np.array([0.2, -0.5, 0.4, 0.1])
    model = make_regressor("log_linear").fit(X, 1.0 + np.exp(X @ t))
    res = propose(model, DOMAINS, "optimize", np.full(4, 0.25), caps=np.array([1.0, 0.6, 1.0, 1.0]))
    np.testing.assert_allclose(res.weights, [0.0, 0.6, 0.0, 0.4], atol=1e-3)
    assert res.active_caps == ["b<=0.6"]


def test_kl_penalty_pulls_towards_the_prior():
    model = make_regressor("linear")
    model.t = np.array([1.0, 2.0, 2.0, 2.0])
    prior = np.full(4, 0.25)
    free = propose(model, DOMAINS, "optimize", prior).weights
    held = propose(model, DOMAINS, "optimize", prior, kl=1.0).weights
    assert free[0] == pytest.approx(1.0, abs=1e-4)
    # KL-regularised linear objective: x ∝ prior · exp(−t/λ) (a softmax), exactly.
    expect = prior * np.exp(-model.t / 1.0)
    np.testing.assert_allclose(held, expect / expect.sum(), atol=1e-3)


def test_infeasible_caps_name_the_binding_caps():
    model = Bowl([0.25] * 4)
    with pytest.raises(UserError, match=r"caps='a<=0.1, b<=0.2, c<=0.2, d<=0.3'.*infeasible: the caps sum to 0.8 < 1"):
        propose(model, DOMAINS, "optimize", np.full(4, 0.25), caps=np.array([0.1, 0.2, 0.2, 0.3]))


def test_trees_refuse_the_continuous_optimiser():
    model = make_regressor("lightgbm").fit(dirichlet_swarm(np.full(4, 0.25), 30, 0), np.arange(30.0))
    with pytest.raises(UserError, match="piecewise constant"):
        propose(model, DOMAINS, "optimize", np.full(4, 0.25))


def test_ddo_recovers_power_laws_and_the_optimum():
    # Synthetic additive loss: Σ_i (x_i + a_i)^(−b_i) + c with x_i the multiplier of domain i's amount.
    a, b = np.array([0.2, 0.5, 0.1]), np.array([0.8, 0.3, 1.5])
    base = np.array([1000.0, 1000.0, 1000.0])
    domains = ["p", "q", "r"]

    def loss(n):
        x = n / base
        return float(np.sum((x + a) ** (-b)) + 1.0)

    runs = {name: loss(n) for name, n in ddo_design(domains, base, 3.0)}
    assert len(runs) == 7  # 2m + 1
    params, amounts, pred = ddo_solve(domains, base, runs, 3.0, min_factor=0.05)
    for (fa, fb, _), ta, tb in zip(params, a, b):
        assert fa == pytest.approx(ta, abs=1e-3) and fb == pytest.approx(tb, abs=1e-3)
    # The true optimum of the same program (solved on a fine grid of the simplex of amounts).
    grid = np.linspace(0.05, 2.9, 300)
    best = min(((x1, x2, 3 - x1 - x2) for x1 in grid for x2 in grid if 3 - x1 - x2 >= 0.05), key=lambda x: loss(np.array(x) * base))
    np.testing.assert_allclose(amounts / base, best, atol=0.02)
    assert pred == pytest.approx(loss(amounts), abs=1e-6)
    assert amounts.sum() == pytest.approx(base.sum())


def test_autoscale_extrapolates_exponential_in_log_budget():
    # N_i*(B) = n_i · B^{k_i}: AutoScale's assumption; two budgets determine every other exactly.
    n0, k = np.array([2.0, 5.0, 1.0]), np.array([1.1, 0.8, 1.0])

    def at(B):
        amounts = n0 * B ** k
        return DDOResult(["p", "q", "r"], B, list(amounts), [(0, 1, 0)] * 3, list(amounts), 0.0, 0.0)

    pred = autoscale_predict(at(1000.0), at(4000.0), 64000.0)
    np.testing.assert_allclose(pred.amounts, at(64000.0).amounts, rtol=1e-9)
    # the paper's one-step form N3 = N2 ⊙ (N2 / N1) for B3 = B2² / B1
    two = autoscale_predict(at(1000.0), at(4000.0), 16000.0)
    np.testing.assert_allclose(two.amounts, np.array(at(4000.0).amounts) ** 2 / np.array(at(1000.0).amounts), rtol=1e-9)
    with pytest.raises(UserError, match="smaller budget first"):
        autoscale_predict(at(4000.0), at(1000.0), 1e5)


def test_regmix_swarm_respects_caps_zeroes_tiny_weights_and_drops_duplicates():
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    caps = np.array([0.6, 1.0, 1.0, 0.5])
    X = regmix_swarm(prior, 64, 0, caps=caps, min_distance=0.01)
    assert X.shape == (64, 4)
    np.testing.assert_allclose(X.sum(axis=1), 1.0)
    assert (X <= caps + 1e-9).all()
    assert ((X == 0) | (X >= 2e-4 - 1e-12)).all()
    d = np.abs(X[:, None, :] - X[None, :, :]).sum(-1) + np.eye(64) * 9
    assert d.min() >= 0.01
    assert (X == 0).any()  # small strengths give sparse mixtures, as in RegMix


def test_dirichlet_swarm_centres_on_the_tempered_prior():
    prior = np.array([0.7, 0.2, 0.1])
    X = dirichlet_swarm(prior, 4000, 0, temperature=2.0, concentration=20.0)
    t = np.sqrt(prior) / np.sqrt(prior).sum()
    np.testing.assert_allclose(X.mean(axis=0), t, atol=0.01)


def test_three_points_two_exact_laws_the_flatter_is_taken():
    """Through DDO's three points two power laws can pass exactly; the fit must not depend on which
    one the optimiser happens to reach first: the smaller exponent is taken."""
    from assay.mixsearch.ddo import fit_power_law, power_law

    x = np.array([1 / 3, 1.0, 3.0])
    y = power_law(x, 0.5, 0.3, 2.0)
    other = (1.329863558652766, 0.9780769880522672)  # the second exact law through the same points
    c_other = float(y[1] - (1 + other[0]) ** (-other[1]))
    assert np.allclose(power_law(x, *other, c_other), y, atol=1e-9)
    assert fit_power_law(x, y, 0.05) == pytest.approx((0.5, 0.3, 2.0), abs=1e-6)


@pytest.mark.parametrize("fixed_steps", [False, True])
def test_ddo_runs_one_pass_each_or_all_at_the_largest_runs_steps(tmp_path, monkeypatch, fixed_steps):
    """Budget 1,200 over a:b = 300:900 (natural), factor 3, batch 100: 'up_b' holds 300 + 2,700 = 3,000
    examples, the largest run; one pass each gives every run its own ceil(examples / 100) steps, fixed
    steps gives all five runs that run's 30 (the others then repeat their data)."""
    from assay.mixsearch import pool
    from assay.mixsearch.ddo import ddo_swarm
    from assay.mixsearch.mixture import MixtureSpec

    monkeypatch.setattr(pool, "pool_sizes", lambda overrides: {"a": 1000, "b": 3000})
    swarm = ddo_swarm(tmp_path / "ddo", 1200.0, 3.0, "{a:1,b:3}", [], MixtureSpec(), 100, "trainer.max_steps", "mixture.num_examples", None, 1.0,
                      fixed_steps=fixed_steps)
    examples = {p.id: p.extra["mixture.num_examples"] for p in swarm.proxies}
    assert examples == {"base": 1200, "up_a": 1800, "down_a": 1000, "up_b": 3000, "down_b": 600}
    steps = {p.id: p.extra["trainer.max_steps"] for p in swarm.proxies}
    assert steps == ({k: 30 for k in examples} if fixed_steps else {"base": 12, "up_a": 18, "down_a": 10, "up_b": 30, "down_b": 6})
