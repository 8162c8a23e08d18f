"""Projektor (Kang et al. 2023) on toys with hand-derived answers: the pseudo-quadratic design and its
OLS fit, the log-N extrapolation, the OT gradient from the dual potentials, the proposal, bad input,
and fit → propose → validate through ``assay-mix``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from assay.errors import UserError
from assay.mixsearch.propose import propose
from assay.mixsearch.regressors import make_regressor
from assay.mixsearch.pilots import MixtureOT, Pilots
from assay.mixsearch.regressors.projektor import ProjektorLaw, log_n_weights

DOMAINS = ["copy", "add", "sort"]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pilots() -> Pilots:
    """Three sources as well-separated 2-d clusters; the target is half copy's and half add's points,
    so the mixture closest to it in OT is (0.5, 0.5, 0)."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    src = {d: centres[i] + 0.3 * rng.standard_normal((20, 2)) for i, d in enumerate(DOMAINS)}
    target = np.vstack([src["copy"][:10], src["add"][:10]]) + 0.05 * rng.standard_normal((20, 2))
    return Pilots(src, target, "toy")


def test_design_columns_by_hand():
    # [1, OT, p_i, p_i·OT, p_i²·OT] for i < m: p = (0.2, 0.5, 0.3), OT = 2
    row = ProjektorLaw.design(np.array([[0.2, 0.5, 0.3]]), np.array([2.0]))[0]
    np.testing.assert_allclose(row, [1, 2, 0.2, 0.5, 0.4, 1.0, 0.08, 0.5])


def test_ols_recovers_known_coefficients(pilots):
    law = ProjektorLaw(pilots=pilots, domains=DOMAINS)
    X = np.random.default_rng(1).dirichlet(np.ones(3), 30)
    true = np.array([0.5, 2.0, 0.3, -0.2, 0.4, 0.1, -0.3, 0.2])  # c0, b0, c1 (2), b1 (2), b2 (2)
    y = law.design(X, law.ot.values(X)) @ true
    law.fit(X, y)
    np.testing.assert_allclose(law.coef[0], true, atol=1e-8)
    assert law.params()["per_size"]["N=nan"]["b2"] == pytest.approx([-0.3, 0.2])
    np.testing.assert_allclose(law.predict(X), y, atol=1e-8)


def test_log_n_extrapolation_by_hand(pilots):
    # the paper's example: pilots at N0 = 1000 and N1 = 1500, projected to N = 10,000:
    # w1 = ln(10000/1000)/ln(1.5) = 5.678873, w0 = -ln(10000/1500)/ln(1.5) = -4.678873
    np.testing.assert_allclose(log_n_weights(np.array([1000.0, 1500.0]), np.array([10_000.0])), [[-4.678873, 5.678873]], atol=1e-6)
    # a law that is 3.0 at N0 and 2.8 at N1 whatever the mixture: 5.678873·2.8 − 4.678873·3.0 = 1.864225
    X = np.random.default_rng(2).dirichlet(np.ones(3), 16)
    law = make_regressor("projektor")
    law.ot = MixtureOT(pilots, DOMAINS)
    law.fit(np.vstack([X, X]), np.r_[np.full(16, 3.0), np.full(16, 2.8)], np.r_[np.full(16, 1000.0), np.full(16, 1500.0)])
    assert law.sizes == [1000.0, 1500.0]
    assert law.predict(X[:2], 10_000.0) == pytest.approx([1.864225, 1.864225], abs=1e-6)
    # three sizes: the least-squares line in log N (numpy's polyfit of the per-size values)
    sizes, vals = np.array([500.0, 1000.0, 1500.0]), np.array([3.3, 3.0, 2.8])
    want = np.polyval(np.polyfit(np.log(sizes), vals, 1), math.log(10_000))
    assert float(log_n_weights(sizes, np.array([10_000.0]))[0] @ vals) == pytest.approx(want, abs=1e-12)


def test_one_pilot_size_predicts_there_and_refuses_to_extrapolate(pilots):
    law = ProjektorLaw(pilots=pilots, domains=DOMAINS)
    X = np.random.default_rng(3).dirichlet(np.ones(3), 12)
    law.fit(X, law.ot.values(X), np.full(12, 1600.0))
    assert law.predict(X[:1], 1600.0) == pytest.approx(law.ot.values(X[:1]), abs=1e-8)
    with pytest.raises(UserError, match=r"fitted at one pilot size \(1600\); extrapolating in log N needs proxies at two sizes"):
        law.predict(X[:1], 32_000.0)


def test_ot_gradient_is_the_mean_dual_potential_of_each_source(pilots):
    ot = MixtureOT(pilots, DOMAINS)
    h = 1e-5
    for p, one_sided in ((np.array([0.2, 0.5, 0.3]), False), (np.array([0.6, 0.4, 0.0]), True)):
        _, grad = ot(p)
        for d in (np.array([1.0, -1.0, 0.0]), np.array([-1.0, 0.0, 1.0])):
            if one_sided:  # sort has no mass: its pilots' potentials come from the c-transform; step into the simplex
                fd = (ot(p + h * d)[0] - ot(p)[0]) / h
            else:
                fd = (ot(p + h * d)[0] - ot(p - h * d)[0]) / (2 * h)
            assert grad @ d == pytest.approx(fd, rel=2e-3, abs=2e-3)


def test_proposal_reaches_the_known_optimum_and_names_binding_caps(pilots):
    law = ProjektorLaw(pilots=pilots, domains=DOMAINS, reg=0.05)  # a larger ε: fewer Sinkhorn iterations per step
    X = np.random.default_rng(4).dirichlet(np.ones(3), 12)
    law.fit(X, law.ot.values(X))  # L = OT(p, target): b0 = 1, every other coefficient 0
    res = propose(law, DOMAINS, "projektor", np.full(3, 1 / 3), lr=0.05)
    np.testing.assert_allclose(res.weights, [0.5, 0.5, 0.0], atol=2e-3)
    capped = propose(law, DOMAINS, "projektor", np.full(3, 1 / 3), caps=np.array([0.3, 1.0, 1.0]), lr=0.05)
    assert capped.weights[0] == pytest.approx(0.3, abs=1e-6) and capped.active_caps == ["copy<=0.3"]


def test_bad_input_is_one_line(pilots, tmp_path):
    Pilots({d: x for d, x in pilots.sources.items() if d != "sort"}, pilots.target, "p.npz").save(tmp_path / "p.npz")
    broken = Pilots.load(tmp_path / "p.npz")
    with pytest.raises(UserError, match=r"source 'sort' has no pilot sample: Projektor needs embedded examples of every source"):
        MixtureOT(broken, DOMAINS)
    law = ProjektorLaw(pilots=pilots, domains=DOMAINS)
    X = np.random.default_rng(5).dirichlet(np.ones(3), 12)
    law.fit(X, law.ot.values(X))
    with pytest.raises(UserError, match="solves one OT problem per mixture; use --proposer projektor"):
        propose(law, DOMAINS, "simulation", np.full(3, 1 / 3))
    linear = make_regressor("linear").fit(X, X @ np.array([1.0, 2.0, 3.0]))
    with pytest.raises(UserError, match="follows the OT dual gradient of a projektor fit; regressor linear has none"):
        propose(linear, DOMAINS, "projektor", np.full(3, 1 / 3))
    with pytest.raises(UserError, match=r"--pilots=None: projektor needs the sources' pilot samples"):
        from assay.mixsearch.table import Table

        make_regressor("projektor", table=Table(DOMAINS, X, X[:, 0], [str(i) for i in range(12)], "t"))


def test_cli_fit_propose_validate(pilots, tmp_path, assay_cli):
    """As a user runs it: a table of proxies, the sources' pilots, fit, propose, and a validation plan."""
    pilots.save(tmp_path / "pilots.npz")
    X = np.random.default_rng(6).dirichlet(np.ones(3), 14)
    y = MixtureOT(pilots, DOMAINS).values(X) + 2.0
    rows = ["id," + ",".join(f"w/{d}" for d in DOMAINS) + ",scale,loss"] + [f"p{i},{','.join(f'{v:.12g}' for v in x)},1600,{t:.12g}" for i, (x, t) in enumerate(zip(X, y))]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    common = [str(tmp_path / "table.csv"), "--target", "loss", "--regressor", "projektor", "--pilots", str(tmp_path / "pilots.npz")]
    fit = assay_cli(["fit", *common, "--out", str(tmp_path / "fit")], ROOT, command="assay.mixsearch.cli")
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert "| projektor | 1.000 |" in (tmp_path / "fit" / "fit.md").read_text()  # the toy target is exactly b0·OT + c0
    # the paper's step (5e-4) from the uniform prior: a short move down the gradient, toward copy and add, away from sort
    prop = assay_cli(["propose", *common, "--proposer", "projektor", "--out", str(tmp_path / "proposed")], ROOT, command="assay.mixsearch.cli")
    assert prop.returncode == 0, prop.stderr[-2000:]
    out = json.loads((tmp_path / "proposed" / "projektor.json").read_text())
    w = out["weights"]
    assert w["copy"] > 1 / 3 + 1e-3 and w["add"] > 1 / 3 + 1e-3 and w["sort"] < 1 / 3 - 1e-3 and out["scale"] == 1600
    assert out["predicted"] < 2.0 + MixtureOT(pilots, DOMAINS)(np.full(3, 1 / 3))[0]
    val = assay_cli(["validate", str(tmp_path / "val"), "--mixture", str(tmp_path / "proposed" / "projektor.json"), "--baselines", "uniform",
                     "--seeds", "0", "--dry-run", "--", "data.domains=[copy,add,sort]"], ROOT, command="assay.mixsearch.cli")
    assert val.returncode == 0, val.stderr[-2000:]
    assert "2 mixtures × 1 seeds = 2 runs" in val.stdout and "+proxy=projektor-s0,uniform-s0" in val.stdout
