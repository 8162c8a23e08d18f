"""olmix's three levels (source:topic:quality) searched at any level, quality upsampling, and --freeze with --level."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assay.errors import UserError
from assay.mixsearch.levels import at_level, by_level, flatten_levels, parse_names
from assay.mixsearch.propose import propose
from assay.mixsearch.regressors import make_regressor
from assay.mixsearch.reuse import collapse, collapse_vector, combine, expand, frozen_from_proposal
from assay.mixsearch.swarm import dirichlet_swarm

ROOT = Path(__file__).resolve().parents[3]

# A pool of 200 examples: web has a topic with quality buckets and one without, code one bucketed topic, books
# is a source without topics (a leaf at every level).
LEAVES = ["web:news:high", "web:news:low", "web:forum", "code:py:high", "code:py:low", "books"]
COUNTS = np.array([10, 30, 60, 20, 20, 60.0])
SIZES = ",".join(f"{d}={int(c)}" for d, c in zip(LEAVES, COUNTS))


def test_three_levels_grouped_at_each_level_by_hand():
    # source: web = 100 examples -> news:high 10/100, news:low 30/100, forum 60/100; code = 40 -> 20/40 each
    src = by_level(LEAVES, COUNTS, "source")
    assert src.collapsed(LEAVES) == ["web", "code", "books"]
    assert src.groups["web"] == pytest.approx({"web:news:high": 0.1, "web:news:low": 0.3, "web:forum": 0.6})
    assert src.groups["code"] == pytest.approx({"code:py:high": 0.5, "code:py:low": 0.5})
    # topic: web:news = 40 -> 10/40, 30/40; web:forum and books have no more parts: searched as they are
    top = by_level(LEAVES, COUNTS, "topic")
    assert top.collapsed(LEAVES) == ["web:news", "code:py", "web:forum", "books"]
    assert top.groups["web:news"] == pytest.approx({"web:news:high": 0.25, "web:news:low": 0.75})
    # natural prior per level: the sums of the leaves' shares (200 examples)
    np.testing.assert_allclose(collapse_vector(COUNTS / 200, LEAVES, src, "sum"), [0.5, 0.2, 0.3])
    np.testing.assert_allclose(collapse_vector(COUNTS / 200, LEAVES, top, "sum"), [0.2, 0.2, 0.3, 0.3])
    assert at_level(dict(zip(LEAVES, COUNTS / 200)), "topic") == pytest.approx({"web:news": 0.2, "web:forum": 0.3, "code:py": 0.2, "books": 0.3})


def test_quality_weights_split_each_topic_by_olmix_upsampling():
    # high:low = 3:1 inside every topic; the topics keep their natural shares (web:news 40 of web's 100)
    src = by_level(LEAVES, COUNTS, "source", {"high": 3, "low": 1})
    assert src.groups["web"] == pytest.approx({"web:news:high": 0.3, "web:news:low": 0.1, "web:forum": 0.6})
    assert src.groups["code"] == pytest.approx({"code:py:high": 0.75, "code:py:low": 0.25})
    top = by_level(LEAVES, COUNTS, "topic", {"high": 3, "low": 1})
    assert top.groups["web:news"] == pytest.approx({"web:news:high": 0.75, "web:news:low": 0.25})
    # a bucket not named gets 0 (olmix: a QualityConfig without weight, when its siblings have one)
    assert by_level(LEAVES, COUNTS, "source", {"high": 1}).groups["web"] == pytest.approx({"web:news:high": 0.4, "web:news:low": 0.0, "web:forum": 0.6})
    # caps through the levels: code:py:high <= 0.15 at ratio 0.75 caps code at 0.2; web:forum <= 0.3 at 0.6 caps web at 0.5
    caps = np.array([1, 1, 0.3, 0.15, 1, 1.0])
    np.testing.assert_allclose(collapse_vector(caps, LEAVES, src, "cap"), [0.5, 0.2, 1.0])


def test_round_trip_leaf_source_leaf_at_natural_shares():
    src = by_level(LEAVES, COUNTS, "source")
    natural = COUNTS / 200
    np.testing.assert_allclose(collapse(natural, LEAVES, src), [[0.5, 0.2, 0.3]])
    np.testing.assert_allclose(expand([0.5, 0.2, 0.3], LEAVES, src), [natural])
    # another source mixture: web 0.2 -> 0.02, 0.06, 0.12; code 0.6 -> 0.3, 0.3; books 0.2
    leaf = expand([0.2, 0.6, 0.2], LEAVES, src)
    np.testing.assert_allclose(leaf, [[0.02, 0.06, 0.12, 0.3, 0.3, 0.2]])
    np.testing.assert_allclose(collapse(leaf, LEAVES, src), [[0.2, 0.6, 0.2]])
    assert at_level(dict(zip(LEAVES, leaf[0])), "source") == pytest.approx({"web": 0.2, "code": 0.6, "books": 0.2})
    # the same mixture written per level, the children at their counts, flattens to the same leaves
    within = {"web": {"news": 40, "forum": 60}, "web:news": {"high": 10, "low": 30}, "code": {"py": 40}, "code:py": {"high": 20, "low": 20}}
    assert flatten_levels({"web": 0.2, "code": 0.6, "books": 0.2}, within) == pytest.approx(dict(zip(LEAVES, leaf[0])))


def test_flatten_levels_three_deep_by_hand():
    # web 3/4 -> news 1/4 -> high, low 1/2 each = 0.09375; forum 3/4 of web = 0.5625; code 1/4
    leaf = flatten_levels({"web": 3, "code": 1}, {"web": {"news": 1, "forum": 3}, "web:news": {"high": 2, "low": 2}})
    assert leaf == pytest.approx({"web:news:high": 0.09375, "web:news:low": 0.09375, "web:forum": 0.5625, "code": 0.25})
    with pytest.raises(UserError, match="'web:books': has children but is not a source or a node below one"):
        flatten_levels({"web": 1}, {"web": {"news": 1}, "web:books": {"x": 1}})


def test_bad_names_and_buckets_are_one_line():
    with pytest.raises(UserError, match=r"--level='web:news': is a domain and also a node of web:news:high"):
        parse_names(["web:news", "web:news:high"])
    with pytest.raises(UserError, match=r"--level='web::high': has an empty level"):
        by_level(["web::high", "web:news:low"], np.ones(2), "source")
    with pytest.raises(UserError, match=r"--level='web:news:': has an empty level"):
        by_level(["web:news:", "web:news:low"], np.ones(2), "topic")
    with pytest.raises(UserError, match="no domain is named below the topic level"):
        by_level(["web:news", "books"], np.ones(2), "topic")
    with pytest.raises(UserError, match=r"--quality-weights='med': unknown quality bucket; buckets are \['high', 'low'\]"):
        by_level(LEAVES, COUNTS, "source", {"med": 1})
    with pytest.raises(UserError, match="gives every bucket of web:news \\(high, low\\) weight 0"):
        by_level(LEAVES[:2] + ["code:py:med"], np.ones(3), "source", {"med": 1})
    # an empty bucket: natural shares give it 0, upsampling it has nothing to draw from
    empty = np.array([0, 30, 60, 20, 20, 60.0])
    assert by_level(LEAVES, empty, "topic").groups["web:news"] == pytest.approx({"web:news:high": 0.0, "web:news:low": 1.0})
    with pytest.raises(UserError, match="bucket web:news:high is empty \\(0 examples\\) and cannot be upsampled"):
        by_level(LEAVES, empty, "topic", {"high": 3, "low": 1})
    with pytest.raises(UserError, match="--level='code:py': has no data"):
        by_level(LEAVES, np.array([10, 30, 60, 0, 0, 60.0]), "topic")


# --freeze with --level: an earlier proposal over a (two topics) and b (one topic in two quality buckets); b has been
# revised since and a new source n added. The frozen a-leaves keep the proposal's 3:1, the free leaves are grouped by
# source at their natural shares (b 200:200, n 100:300).
FL = ["a:x", "a:y", "b:p:high", "b:p:low", "n:u:high", "n:u:low"]
FCOUNTS = np.array([300, 100, 200, 200, 100, 300.0])
OLD = {"a:x": 0.3, "a:y": 0.1, "b:p:high": 0.4, "b:p:low": 0.2}
FCAPS = np.array([1, 1, 1, 1, 1, 0.225])  # n:u:low <= 0.225 at ratio 0.75 caps n at 0.3


def flaw(X):
    """Costs 2 (a), 3 (b), 1 (n) per unit weight, and penalties that vanish exactly at a's frozen 3:1, b's 1:1 and
    n's 1:3. With n <= 0.3: loss = 2 + b - n + penalties >= 1.7, reached at b = 0, n = 0.3, a = 0.7 split 3:1 and n
    split 1:3: a:x 0.525, a:y 0.175, n:u:high 0.075, n:u:low 0.225."""
    ax, ay, bh, bl, nh, nl = np.atleast_2d(X).T
    return 2 * (ax + ay) + 3 * (bh + bl) + nh + nl + 10 * (0.25 * ax - 0.75 * ay) ** 2 + 10 * (bh - bl) ** 2 + 10 * (0.75 * nh - 0.25 * nl) ** 2


FSTAR = np.array([0.525, 0.175, 0.0, 0.0, 0.075, 0.225])


@pytest.fixture
def old(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"name": "linear", "weights": OLD}))
    return path


def _freeze_at_source(old):
    fr = frozen_from_proposal(old, FL, ["b"], FCOUNTS)  # "b" names the source: both its buckets are revised
    return combine(fr, by_level(FL, FCOUNTS, "source", free=[d for d in FL if d not in fr.ratios]))


def test_freeze_with_level_groups_the_free_leaves_and_recovers_the_optimum(old):
    g = _freeze_at_source(old)
    assert g.collapsed(FL) == ["frozen", "b", "n"]
    assert g.groups["frozen"] == pytest.approx({"a:x": 0.75, "a:y": 0.25})
    assert g.groups["n"] == pytest.approx({"n:u:high": 0.25, "n:u:low": 0.75})
    caps = collapse_vector(FCAPS, FL, g, "cap")
    np.testing.assert_allclose(caps, [1.0, 1.0, 0.3])
    # 6 runs over 3 collapsed domains; every penalty is 0 there, so the law is linear and the fit exact
    Xc = dirichlet_swarm(np.full(3, 1 / 3), 6, 0)
    model = make_regressor("linear").fit(Xc, flaw(expand(Xc, FL, g)))
    res = propose(model, g.collapsed(FL), "optimize", np.full(3, 1 / 3), caps=caps)
    np.testing.assert_allclose(res.weights, [0.7, 0.0, 0.3], atol=1e-4)
    np.testing.assert_allclose(expand(res.weights, FL, g)[0], FSTAR, atol=1e-4)
    assert flaw(FSTAR)[0] == pytest.approx(1.7)


def test_freeze_a_proposal_made_at_the_source_level(tmp_path):
    """A proposal written per source: its weight spreads over the leaves at their natural shares; a node partly
    revised stands for its free leaves alone."""
    path = tmp_path / "src.json"
    path.write_text(json.dumps({"weights": {"a": 0.4, "b": 0.6}}))
    assert frozen_from_proposal(path, FL, ["b"], FCOUNTS).ratios == pytest.approx({"a:x": 0.75, "a:y": 0.25})
    # b:p:low revised: a 0.4 -> 0.3, 0.1; b 0.6 -> 0.3 for b:p:high; frozen a:x, a:y, b:p:high = 3/7, 1/7, 3/7
    fr = frozen_from_proposal(path, FL, ["b:p:low"], FCOUNTS)
    assert fr.ratios == pytest.approx({"a:x": 3 / 7, "a:y": 1 / 7, "b:p:high": 3 / 7})
    g = combine(fr, by_level(FL, FCOUNTS, "source", free=["b:p:low", "n:u:high", "n:u:low"]))
    assert g.collapsed(FL) == ["frozen", "b", "n"] and g.groups["b"] == {"b:p:low": 1.0}
    with pytest.raises(UserError, match="--freeze='zz': unknown domain"):
        frozen_from_proposal(path, FL, ["zz"], FCOUNTS)


@pytest.mark.cli
def test_cli_fit_and_propose_with_freeze_and_level(old, tmp_path, assay_cli):
    g = _freeze_at_source(old)
    X = expand(dirichlet_swarm(np.full(3, 1 / 3), 6, 1), FL, g)
    rows = ["id," + ",".join(f"w/{d}" for d in FL) + ",loss"] + [f"p{i},{','.join(f'{v:.12g}' for v in x)},{t:.12g}" for i, (x, t) in enumerate(zip(X, flaw(X)))]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    sizes = ",".join(f"{d}={int(c)}" for d, c in zip(FL, FCOUNTS))
    common = [str(tmp_path / "table.csv"), "--target", "loss", "--regressor", "linear", "--sizes", sizes, "--freeze", f"{old}:b", "--level", "source"]
    prop = assay_cli(["propose", *common, "--proposer", "optimize", "--caps", "n:u:low=0.225", "--out", str(tmp_path / "proposed")], ROOT, command="assay.mixsearch.cli")
    assert prop.returncode == 0, prop.stderr[-2000:]
    out = json.loads((tmp_path / "proposed" / "linear.json").read_text())
    assert out["weights"] == pytest.approx(dict(zip(FL, FSTAR)), abs=1e-4)
    assert out["collapsed"] == pytest.approx({"frozen": 0.7, "b": 0.0, "n": 0.3}, abs=1e-4) and out["level"] == "source"
    fit = assay_cli(["fit", *common, "--out", str(tmp_path / "fit")], ROOT, command="assay.mixsearch.cli")
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert "6 proxies, 3 domains" in (tmp_path / "fit" / "fit.md").read_text()


@pytest.mark.cli
def test_cli_propose_at_the_topic_level_with_quality_weights(tmp_path, assay_cli):
    """Topic level, high:low = 3:1: loss = 1·web:news + 2·code:py + 3·web:forum + 4·books; web:news:high <= 0.3 caps
    web:news at 0.3/0.75 = 0.4 and code:py:low <= 0.1 caps code:py at 0.1/0.25 = 0.4, web:forum takes the last 0.2."""
    g = by_level(LEAVES, COUNTS, "topic", {"high": 3, "low": 1})
    X = expand(dirichlet_swarm(np.full(4, 0.25), 8, 3), LEAVES, g)
    Xc = collapse(X, LEAVES, g)
    loss = Xc @ np.array([1.0, 2.0, 3.0, 4.0])
    rows = ["id," + ",".join(f"w/{d}" for d in LEAVES) + ",loss"] + [f"p{i},{','.join(f'{v:.12g}' for v in x)},{t:.12g}" for i, (x, t) in enumerate(zip(X, loss))]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    prop = assay_cli(["propose", str(tmp_path / "table.csv"), "--target", "loss", "--regressor", "linear", "--proposer", "optimize",
                      "--sizes", SIZES, "--caps", "web:news:high=0.3,code:py:low=0.1", "--level", "topic", "--quality-weights", "{high:3,low:1}",
                      "--out", str(tmp_path / "proposed")], ROOT, command="assay.mixsearch.cli")
    assert prop.returncode == 0, prop.stderr[-2000:]
    out = json.loads((tmp_path / "proposed" / "linear.json").read_text())
    want = {"web:news:high": 0.3, "web:news:low": 0.1, "web:forum": 0.2, "code:py:high": 0.3, "code:py:low": 0.1, "books": 0.0}
    assert out["weights"] == pytest.approx(want, abs=1e-4)
    # the same table read at the natural bucket shares: its rows keep 3:1, not 1:3, so one line
    bad = assay_cli(["propose", str(tmp_path / "table.csv"), "--target", "loss", "--regressor", "linear", "--sizes", SIZES, "--level", "topic"],
                    ROOT, command="assay.mixsearch.cli")
    assert bad.returncode == 2 and "does not keep the ratios of web:news (web:news:high 0.25, web:news:low 0.75" in bad.stderr.strip().splitlines()[-1]
    short = assay_cli(["propose", str(tmp_path / "table.csv"), "--target", "loss", "--regressor", "linear", "--sizes", "books=60", "--level", "topic"],
                      ROOT, command="assay.mixsearch.cli")
    assert short.returncode == 2 and short.stderr.strip().splitlines()[-1].startswith("error: --sizes='web:news:high,web:news:low,web:forum,code:py:high,")


def test_swarm_at_the_source_level_with_quality_weights_keeps_shares_and_caps(tmp_path, monkeypatch):
    import assay.mixsearch.pool as pool
    from assay.mixsearch.cli import main
    from assay.mixsearch.swarm import Swarm

    monkeypatch.setattr(pool, "pool_sizes", lambda overrides: dict(zip(LEAVES, COUNTS)))
    with pytest.raises(SystemExit) as done:
        main(["swarm", str(tmp_path / "s"), "-n", "6", "--method", "dirichlet", "--no-launch", "--level", "source",
              "--quality-weights", "{high:3,low:1}", "--caps", "code:py:high=0.15"])
    assert done.value.code in (0, None)
    X = np.array([[p.weights.get(d, 0.0) for d in LEAVES] for p in Swarm.load(tmp_path / "s").proxies])
    # web 0.3 : 0.1 : 0.6 and code 0.75 : 0.25 in every proxy (weights are written to 6 decimals)
    np.testing.assert_allclose(X[:, 0], 3 * X[:, 1], atol=4e-6)
    np.testing.assert_allclose(X[:, 2], 2 * X[:, 0], atol=4e-6)
    np.testing.assert_allclose(X[:, 3], 3 * X[:, 4], atol=4e-6)
    assert (X[:, 3] <= 0.15 + 1e-6).all() and np.ptp(X[:, 5]) > 0.05
    np.testing.assert_allclose(X.sum(axis=1), 1.0, atol=1e-5)


def test_swarm_with_freeze_and_level_varies_only_the_free_sources(old, tmp_path, monkeypatch):
    import assay.mixsearch.pool as pool
    from assay.mixsearch.cli import main
    from assay.mixsearch.swarm import Swarm

    monkeypatch.setattr(pool, "pool_sizes", lambda overrides: dict(zip(FL, FCOUNTS)))
    with pytest.raises(SystemExit) as done:
        main(["swarm", str(tmp_path / "s"), "-n", "6", "--method", "dirichlet", "--no-launch", "--freeze", f"{old}:b", "--level", "source",
              "--caps", "n:u:low=0.225"])
    assert done.value.code in (0, None)
    swarm = Swarm.load(tmp_path / "s")
    X = np.array([[p.weights.get(d, 0.0) for d in FL] for p in swarm.proxies])
    np.testing.assert_allclose(X[:, 0], 3 * X[:, 1], atol=4e-6)  # frozen a:x : a:y = 0.3 : 0.1
    np.testing.assert_allclose(X[:, 2], X[:, 3], atol=4e-6)  # b at its natural 200 : 200
    np.testing.assert_allclose(X[:, 5], 3 * X[:, 4], atol=4e-6)  # n at its natural 100 : 300
    assert (X[:, 5] <= 0.225 + 1e-6).all() and swarm.generator["level"] == "source"
