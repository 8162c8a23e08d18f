import numpy as np
import pytest

from assay.attribution.lds import bootstrap_ci, evaluate, lds, lds_per_example, lds_target_mean, random_subsets, spearman_columns
from assay.errors import UserError


def test_subsets_hold_half_the_examples():
    masks = random_subsets(11, 7, 0.5, seed=3)
    assert masks.shape == (7, 11)
    assert (masks.sum(1) == 6).all()  # round(5.5) = 6
    assert len({m.tobytes() for m in masks}) > 1


def test_spearman_by_hand():
    # ranks (1,2,3,4) vs (1,3,2,4): Σd² = 2, ρ = 1 − 6·2 / (4·15) = 0.8
    a = np.array([[1.0], [2.0], [3.0], [4.0]])
    b = np.array([[10.0], [30.0], [20.0], [40.0]])
    assert spearman_columns(a, b)[0] == pytest.approx(0.8)
    assert np.isnan(spearman_columns(a, np.ones((4, 1)))[0])


def test_linear_model_exact_influence_scores_one_and_random_scores_zero():
    # One gradient step from θ=0 on the squared loss of subset S: θ(S) = η Σ_{i∈S} y_i x_i, so the
    # output on z, f(z; S) = ⟨θ(S), x_z⟩ = Σ_{i∈S} η y_i ⟨x_i, x_z⟩, is exactly linear in S: the exact
    # influence τ(z)_i = η y_i ⟨x_i, x_z⟩ has LDS = 1, a random τ has LDS ≈ 0.
    rng = np.random.default_rng(0)
    n, t, d, eta = 40, 30, 5, 0.1
    x, y, xz = rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal((t, d))
    masks = random_subsets(n, 60, seed=1)
    theta = eta * masks.astype(float) @ (y[:, None] * x)  # [m, d]
    measured = theta @ xz.T  # [m, t]
    exact = eta * (xz @ (y[:, None] * x).T)  # [t, n]
    r = lds(exact, masks, measured)
    assert r.mean == pytest.approx(1.0)
    assert r.low == pytest.approx(1.0) and r.high == pytest.approx(1.0)
    noise = lds(rng.standard_normal((t, n)), masks, measured)
    assert abs(noise.mean) < 0.1 and noise.low < 0 < noise.high
    flipped = lds(-exact, masks, measured)
    assert flipped.mean == pytest.approx(-1.0)
    # one vector for every test example (a target-set scorer) is broadcast over them
    assert np.allclose(lds_per_example(exact[0], masks, measured)[0], 1.0)


def test_bootstrap_ci_brackets_the_mean():
    v = np.random.default_rng(0).normal(0.3, 0.1, 200)
    lo, hi = bootstrap_ci(v)
    assert lo < v.mean() < hi and hi - lo < 0.05
    assert np.isnan(bootstrap_ci(np.array([0.5]))[0])


@pytest.mark.parametrize("kwargs, field", [
    ({"subsets": 10}, "--subsets"),
    ({"subsets": 2, "smoke": True}, "--subsets"),
    ({"n_test": 1}, "--test"),
    ({"methods": ["nope"]}, "--methods"),
])
def test_bad_input_is_one_line(kwargs, field):
    args = {"n_train": 20, "n_test": 4, "subsets": 50, "methods": ["random"], **kwargs}
    with pytest.raises(UserError, match=field):
        evaluate(**args)


def test_target_mean_lds_of_a_linear_model():
    # the mean output over test examples is linear in S with weights τ̄ = mean_z τ(z): LDS = 1
    rng = np.random.default_rng(2)
    n, t = 20, 6
    tau = rng.standard_normal((t, n))
    masks = random_subsets(n, 50, seed=0)
    measured = masks.astype(float) @ tau.T
    assert lds_target_mean(tau, masks, measured) == pytest.approx(1.0)
    assert lds_target_mean(tau.mean(0), masks, measured) == pytest.approx(1.0)
    assert lds_target_mean(-tau.mean(0), masks, measured) == pytest.approx(-1.0)
