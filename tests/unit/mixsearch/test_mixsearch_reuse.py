"""olmix-style mixture reuse (freeze the unchanged ratios, search the changed part) and two-level mixtures
(three levels and --freeze with --level: test_mixsearch_levels.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assay.errors import UserError
from assay.mixsearch.propose import propose
from assay.mixsearch.regressors import make_regressor
from assay.mixsearch.levels import by_source, flatten_levels
from assay.mixsearch.reuse import collapse, collapse_vector, expand, frozen_from_proposal, parse_freeze
from assay.mixsearch.swarm import dirichlet_swarm

ROOT = Path(__file__).resolve().parents[3]
LEAVES = ["a", "b", "c", "n"]
OLD = {"a": 0.3, "b": 0.2, "c": 0.5}  # the earlier proposal; c has since been revised, n is new
CAPS = np.array([1.0, 1.0, 1.0, 0.3])


def law(X):
    """A target whose optimum keeps a:b = 0.6:0.4 (the frozen ratios): equal per-domain costs of a and b and a
    penalty on leaving their ratio. Under n <= 0.3 the optimum is n = 0.3 (cost 1), a + b = 0.7 (cost 2) split
    0.6:0.4, c = 0 (cost 3): a = 0.42, b = 0.28, loss 2·0.7 + 0.3 = 1.7."""
    X = np.atleast_2d(X)
    a, b, c, n = X.T
    return 2 * a + 2 * b + 3 * c + n + 10 * (0.4 * a - 0.6 * b) ** 2


STAR = np.array([0.42, 0.28, 0.0, 0.3])


@pytest.fixture
def old(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"name": "linear", "weights": OLD}))
    return path


def test_freeze_expand_and_collapse_by_hand(old):
    fr = parse_freeze(f"{old}:c", LEAVES)
    assert fr.ratios == pytest.approx({"a": 0.6, "b": 0.4}) and fr.collapsed(LEAVES) == ["frozen", "c", "n"]
    leaf = expand(np.array([0.5, 0.2, 0.3]), LEAVES, fr)
    np.testing.assert_allclose(leaf, [[0.3, 0.2, 0.2, 0.3]])
    np.testing.assert_allclose(collapse(leaf, LEAVES, fr), [[0.5, 0.2, 0.3]])
    # caps: the virtual share stops when its first leaf hits its cap, min(0.3/0.6, 0.5/0.4) = 0.5
    np.testing.assert_allclose(collapse_vector(np.array([0.3, 0.5, 1.0, 0.2]), LEAVES, fr, "cap"), [0.5, 1.0, 0.2])
    np.testing.assert_allclose(collapse_vector(np.array([0.1, 0.2, 0.3, 0.4]), LEAVES, fr, "sum"), [0.3, 0.3, 0.4])
    # a domain removed since (d is gone here): its weight is dropped, the rest renormalised
    assert frozen_from_proposal(old, ["a", "c", "n"]).ratios == pytest.approx({"a": 0.375, "c": 0.625})


def test_reuse_recovers_the_optimum_with_fewer_runs_than_a_fresh_swarm(old):
    fr = frozen_from_proposal(old, LEAVES, ["c"])
    # 6 reuse runs over 3 collapsed domains: the law is exactly linear there (the penalty is 0), so the fit is exact
    Xc = dirichlet_swarm(np.full(3, 1 / 3), 6, 0)
    X = expand(Xc, LEAVES, fr)
    model = make_regressor("linear").fit(Xc, law(X))
    res = propose(model, fr.collapsed(LEAVES), "optimize", np.full(3, 1 / 3), caps=collapse_vector(CAPS, LEAVES, fr, "cap"))
    np.testing.assert_allclose(res.weights, [0.7, 0.0, 0.3], atol=1e-4)
    np.testing.assert_allclose(expand(res.weights, LEAVES, fr)[0], STAR, atol=1e-4)
    # the same 6 runs drawn fresh over the 4 leaves: the penalty is not linear in them, the proposal misses
    Xf = dirichlet_swarm(np.full(4, 0.25), 6, 0)
    fresh = propose(make_regressor("linear").fit(Xf, law(Xf)), LEAVES, "optimize", np.full(4, 0.25), caps=CAPS)
    assert law(fresh.weights)[0] > law(STAR)[0] + 0.1


def test_rows_that_break_the_frozen_ratios_and_bad_freeze_are_one_line(old, tmp_path):
    fr = frozen_from_proposal(old, LEAVES, ["c"])
    with pytest.raises(UserError, match=r"--freeze=.row 0.: does not keep the ratios of frozen \(a 0.6, b 0.4; off by 0.14\)"):
        collapse(np.array([[0.5, 0.1, 0.2, 0.2]]), LEAVES, fr)
    with pytest.raises(UserError, match=r"--freeze='zz': unknown domain"):
        parse_freeze(f"{old}:zz", LEAVES)
    with pytest.raises(UserError, match="is not a file"):
        parse_freeze(str(tmp_path / "none.json"), LEAVES)
    with pytest.raises(UserError, match="every domain is frozen"):
        frozen_from_proposal(old, ["a", "b"])


def test_flatten_levels_source_topic_by_hand():
    leaf = flatten_levels({"web": 3, "code": 1}, {"web": {"news": 1, "forum": 3}})
    assert leaf == pytest.approx({"web:news": 0.1875, "web:forum": 0.5625, "code": 0.25})
    with pytest.raises(UserError, match="has children but is not a source"):
        flatten_levels({"web": 1}, {"books": {"x": 1}})


@pytest.mark.cli
def test_cli_propose_with_freeze_on_a_table(old, tmp_path, assay_cli):
    """As a user runs it: the reuse runs' table (leaf weights), the earlier proposal, c revised."""
    fr = frozen_from_proposal(old, LEAVES, ["c"])
    X = expand(dirichlet_swarm(np.full(3, 1 / 3), 6, 1), LEAVES, fr)
    rows = ["id," + ",".join(f"w/{d}" for d in LEAVES) + ",loss"] + [f"p{i},{','.join(f'{v:.12g}' for v in x)},{t:.12g}" for i, (x, t) in enumerate(zip(X, law(X)))]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    prop = assay_cli(["propose", str(tmp_path / "table.csv"), "--target", "loss", "--regressor", "linear", "--proposer", "optimize",
                      "--caps", "{n:0.3}", "--freeze", f"{old}:c", "--out", str(tmp_path / "proposed")], ROOT, command="assay.mixsearch.cli")
    assert prop.returncode == 0, prop.stderr[-2000:]
    out = json.loads((tmp_path / "proposed" / "linear.json").read_text())
    assert out["weights"] == pytest.approx(dict(zip(LEAVES, STAR)), abs=1e-4)
    assert out["groups"]["frozen"] == pytest.approx({"a": 0.6, "b": 0.4}) and out["collapsed"]["frozen"] == pytest.approx(0.7, abs=1e-4)
    fit = assay_cli(["fit", str(tmp_path / "table.csv"), "--target", "loss", "--regressor", "linear", "--freeze", f"{old}:c",
                     "--out", str(tmp_path / "fit")], ROOT, command="assay.mixsearch.cli")
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert "6 proxies, 3 domains" in (tmp_path / "fit" / "fit.md").read_text()  # frozen, c, n: exactly linear there
    bad = assay_cli(["propose", str(tmp_path / "table.csv"), "--target", "loss", "--regressor", "linear", "--freeze", f"{old}:zz"], ROOT, command="assay.mixsearch.cli")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --freeze='zz': unknown domain")


def test_swarm_with_freeze_varies_only_the_changed_part(old, tmp_path, monkeypatch):
    import assay.mixsearch.pool as pool
    from assay.mixsearch.cli import main
    from assay.mixsearch.swarm import Swarm

    monkeypatch.setattr(pool, "pool_sizes", lambda overrides: {"a": 300, "b": 200, "c": 100, "n": 400})
    # a's cap 0.3 caps the virtual share at 0.3 / 0.6 = 0.5, so every proxy keeps a <= 0.3 and b <= 0.2
    with pytest.raises(SystemExit) as done:
        main(["swarm", str(tmp_path / "s"), "-n", "6", "--method", "dirichlet", "--no-launch", "--caps", "{a:0.3}", "--freeze", f"{old}:c"])
    assert done.value.code in (0, None)
    swarm = Swarm.load(tmp_path / "s")
    X = np.array([[p.weights.get(d, 0.0) for d in LEAVES] for p in swarm.proxies])
    assert swarm.domains == LEAVES and len(X) == 6
    np.testing.assert_allclose(X[:, 0], 1.5 * X[:, 1], atol=2e-6)  # a : b = 0.6 : 0.4 in every proxy (weights are written to 6 decimals)
    assert (X[:, 0] <= 0.3 + 1e-9).all() and np.ptp(X[:, 2]) > 0.05 and np.ptp(X[:, 3]) > 0.05
    np.testing.assert_allclose(X.sum(axis=1), 1.0, atol=1e-5)


SOURCES = ["web:news", "web:forum", "code"]


def test_source_level_groups_topics_at_their_prior_shares():
    g = by_source(SOURCES, np.array([0.3, 0.1, 0.4]))
    assert g.groups == {"web": pytest.approx({"web:news": 0.75, "web:forum": 0.25})} and g.collapsed(SOURCES) == ["web", "code"]
    np.testing.assert_allclose(expand(np.array([0.6, 0.4]), SOURCES, g), [[0.45, 0.15, 0.4]])
    with pytest.raises(UserError, match="no domain is named below the source level"):
        by_source(["a", "b"], np.array([0.5, 0.5]))
    with pytest.raises(UserError, match="'web': is a domain and also a node of web:news"):
        by_source(["web", "web:news"], np.array([0.5, 0.5]))


@pytest.mark.cli
def test_cli_propose_at_the_source_level(tmp_path, assay_cli):
    """Runs whose web topics keep the natural 3:1 (a source-level swarm); loss = 2·web + 1·code, code <= 0.4:
    the source-level optimum web 0.6, code 0.4, expanded to web:news 0.45, web:forum 0.15."""
    g = by_source(SOURCES, np.array([0.3, 0.1, 0.4]))
    X = expand(dirichlet_swarm(np.full(2, 0.5), 5, 2), SOURCES, g)
    rows = ["id," + ",".join(f"w/{d}" for d in SOURCES) + ",loss"] + [f"p{i},{','.join(f'{v:.12g}' for v in x)},{2 * (x[0] + x[1]) + x[2]:.12g}" for i, x in enumerate(X)]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    common = [str(tmp_path / "table.csv"), "--target", "loss", "--regressor", "linear", "--proposer", "optimize", "--sizes", "web:news=300,web:forum=100,code=400"]
    prop = assay_cli(["propose", *common, "--caps", "code=0.4", "--level", "source", "--out", str(tmp_path / "proposed")], ROOT, command="assay.mixsearch.cli")
    assert prop.returncode == 0, prop.stderr[-2000:]
    out = json.loads((tmp_path / "proposed" / "linear.json").read_text())
    assert out["weights"] == pytest.approx({"web:news": 0.45, "web:forum": 0.15, "code": 0.4}, abs=1e-4)
    assert out["collapsed"] == pytest.approx({"web": 0.6, "code": 0.4}, abs=1e-4)
    # the same table at the source level under other topic shares: its rows do not keep them, one line
    bad = assay_cli(["propose", *common[:-1], "web:news=100,web:forum=100,code=400", "--level", "source"], ROOT, command="assay.mixsearch.cli")
    assert bad.returncode == 2 and "does not keep the ratios of web (web:news 0.5, web:forum 0.5" in bad.stderr.strip().splitlines()[-1]


def test_swarm_at_the_source_level_keeps_the_natural_topic_shares(old, tmp_path, monkeypatch, capsys):
    import assay.mixsearch.pool as pool
    from assay.mixsearch.cli import main
    from assay.mixsearch.swarm import Swarm

    monkeypatch.setattr(pool, "pool_sizes", lambda overrides: {"web:news": 300, "web:forum": 100, "code": 400})
    with pytest.raises(SystemExit):
        main(["swarm", str(tmp_path / "s"), "-n", "4", "--method", "dirichlet", "--no-launch", "--level", "source"])
    X = np.array([[p.weights.get(d, 0.0) for d in SOURCES] for p in Swarm.load(tmp_path / "s").proxies])
    np.testing.assert_allclose(X[:, 0], 3 * X[:, 1], atol=4e-6)  # news : forum = 300 : 100 in every proxy
    assert np.ptp(X[:, 2]) > 0.05
    # --level with --freeze is no longer refused (test_mixsearch_levels.py); --quality-weights at the leaf level is
    with pytest.raises(SystemExit) as bad:
        main(["swarm", str(tmp_path / "t"), "-n", "4", "--no-launch", "--quality-weights", "{high:1}"])
    assert bad.value.code == 2 and "--quality-weights='{high:1}': needs --level topic or source" in capsys.readouterr().err
