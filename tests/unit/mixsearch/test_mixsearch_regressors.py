"""Each regressor recovers the parameters of data generated from its own law."""

from __future__ import annotations

import numpy as np
import pytest

from assay.mixsearch.regressors import make_regressor
from assay.mixsearch.swarm import dirichlet_swarm


def _mixtures(n, m, seed=0):
    return dirichlet_swarm(np.full(m, 1.0 / m), n, seed)


def test_linear_recovers_domain_losses():
    X = _mixtures(40, 4)
    t = np.array([2.0, 3.0, 2.5, 4.0])
    model = make_regressor("linear").fit(X, X @ t)
    np.testing.assert_allclose(model.params()["t"], t, atol=1e-8)


def test_log_linear_recovers_c_k_t():
    # Ye et al.: L = c + k exp(Σ t_j r_j), canonical form with Σ t_j = 0.
    X = _mixtures(60, 4, seed=1)
    c, k, t = 1.5, 0.8, np.array([0.9, -0.4, 0.2, -0.7])
    y = c + k * np.exp(X @ t)
    p = make_regressor("log_linear").fit(X, y).params()
    assert p["c"] == pytest.approx(c, abs=1e-3)
    assert p["k"] == pytest.approx(k, rel=1e-3)
    np.testing.assert_allclose(p["t"], t, atol=2e-3)


def test_bimix_recovers_bivariate_law():
    # L(r, s) = Σ_i r_i^{-α_i} (P_i s^{-β_i} + Q_i) with r_i + ε; proxies at three data quantities.
    rng = np.random.default_rng(2)
    X = _mixtures(90, 3, seed=2)
    s = rng.choice([1000.0, 2000.0, 4000.0], size=len(X))
    alpha, beta, P, Q = np.array([0.3, 0.1, 0.5]), np.array([0.5, 0.8, 0.3]), np.array([0.6, 0.9, 0.4]), np.array([0.3, 0.5, 0.2])
    sr = s / np.median(s)
    y = ((X + 1e-3) ** (-alpha) * (P * sr[:, None] ** (-beta) + Q)).sum(axis=1)
    p = make_regressor("bimix").fit(X, y, s).params()
    np.testing.assert_allclose(p["alpha"], alpha, atol=5e-3)
    np.testing.assert_allclose(p["beta"], beta, atol=5e-3)
    np.testing.assert_allclose(p["P"], P, rtol=1e-2)
    np.testing.assert_allclose(p["Q"], Q, rtol=1e-2)


def test_bimix_collapses_to_one_scale():
    X = _mixtures(40, 3, seed=3)
    F, alpha = np.array([0.5, 0.8, 0.3]), np.array([0.2, 0.4, 0.1])
    y = (F * (X + 1e-3) ** (-alpha)).sum(axis=1)
    model = make_regressor("bimix").fit(X, y, np.full(len(X), 2400.0))
    p = model.params()
    assert set(p) == {"F", "alpha"}
    np.testing.assert_allclose(p["alpha"], alpha, atol=5e-3)
    np.testing.assert_allclose(p["F"], F, rtol=1e-2)


def test_autoscale_recovers_power_law():
    # L = L∞ + Σ A_i (N0_i + N r_i)^(-γ_i), proxies at four quantities.
    rng = np.random.default_rng(4)
    X = _mixtures(120, 3, seed=4)
    s = rng.choice([500.0, 1000.0, 2000.0, 4000.0], size=len(X))
    L, A, N0, g = 1.0, np.array([0.5, 0.3, 0.8]), np.array([0.05, 0.2, 0.1]), np.array([0.6, 1.2, 0.4])
    y = L + (A * (N0 + (s / np.median(s))[:, None] * X) ** (-g)).sum(axis=1)
    p = make_regressor("autoscale").fit(X, y, s).params()
    assert p["L"] == pytest.approx(L, abs=1e-2)
    np.testing.assert_allclose(p["gamma"], g, rtol=2e-2)
    np.testing.assert_allclose(p["A"], A, rtol=3e-2)
    np.testing.assert_allclose(p["N0"], N0, rtol=5e-2, atol=2e-3)


def test_gp_recovers_length_scale_and_noise():
    rng = np.random.default_rng(5)
    X = _mixtures(150, 3, seed=5)
    from sklearn.gaussian_process.kernels import RBF

    K = 0.5 * RBF(0.3)(X) + 1e-4 * np.eye(len(X))
    y = rng.multivariate_normal(np.zeros(len(X)), K)
    p = make_regressor("gp").fit(X, y).params()
    assert 0.15 < p["length_scale"] < 0.6
    assert p["noise"] < 1e-2


def test_lightgbm_learns_a_piecewise_constant_law():
    # Trees' own law: a step function of the weights; held-out predictions must rank correctly.
    from scipy.stats import spearmanr

    X = _mixtures(400, 4, seed=6)
    y = 2.0 + 0.5 * (X[:, 0] > 0.3) + 0.3 * (X[:, 2] > 0.2)
    model = make_regressor("lightgbm").fit(X[:300], y[:300])
    pred = model.predict(X[300:])
    assert spearmanr(pred, y[300:]).statistic > 0.9
    imp = np.array(model.params()["importance"])
    assert set(np.argsort(-imp)[:2]) == {0, 2}


def test_fold_spread_of_the_held_out_spearman_at_any_swarm_size():
    """Above 200 proxies the default is one 20 % held-out split (no spread); --folds k gives k folds, each
    with its own Spearman, whose mean and sd the fit table reports."""
    from assay.mixsearch.fit import fit_report, heldout_predictions
    from assay.mixsearch.table import Table

    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), 250)
    y = X @ np.array([2.0, 3.0, 2.5]) + rng.normal(0, 0.01, 250)
    table = Table(["a", "b", "c"], X, y, [f"p{i:03d}" for i in range(250)], "val/loss")
    _, _, scheme, per_fold = heldout_predictions("linear", table)
    assert scheme == "20% held out" and len(per_fold) == 1
    yt, yp, scheme, per_fold = heldout_predictions("linear", table, folds=5)
    assert scheme == "5-fold" and len(per_fold) == 5 and len(yt) == 250
    assert all(0.95 < r <= 1 for r in per_fold)  # a linear law with small noise: every fold ranks it almost exactly
    report = fit_report(table, ["linear"], folds=5, echo=lambda s: None)
    row = report.markdown().splitlines()[-1]
    assert f"{np.mean(per_fold):.3f} ± {np.std(per_fold, ddof=1):.3f} (5 folds)" in row
