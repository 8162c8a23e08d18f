"""MATES against hand-derived numbers.

Oracle (bigram model as in test_forward_inf.py: logits at token x are the row W[x] of one V×V table,
W = 0 at the start, so an example ``[a] → [b]`` has loss log V and its gradient 1/V − e_b touches row a
only). One SGD step of lr η on a single candidate (a → b) sets W[a] = η(e_b − 1/V), i.e. logits
η·e_b up to a shift, so a target example (a → b) then has loss log(e^η + V − 1) − η and a target
(a → c), c ≠ b, loss log(e^η + V − 1). With N targets of distinct prompts the oracle value
I(x) = L(targets after) − L(targets before) is therefore

- a duplicate of a target: (log(e^η + V − 1) − η − log V)/N  (< 0: useful),
- an opponent sharing a target's prompt: (log(e^η + V − 1) − log V)/N  (> 0: harmful),
- a candidate whose prompt no target has: exactly 0.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch

from assay.errors import UserError
from assay.models.probe import optimizer_copy
from assay.selection import SelectionContext
from assay.selection.influence_model import RidgeInfluenceModel, fit_influence_model
from assay.selection.scorers.mates import MATES
from assay.selection.selectors import GumbelTop, KeepContext
from tests.unit.selection.test_forward_inf import DUPLICATES, OPPONENT, POOL, TARGETS, UNRELATED, V, Bigram, Tok, examples



def context(model=None, optimizer=None, clip=None):
    train = examples(POOL, "t")
    splits = datasets.DatasetDict({"train": train, "val": examples(TARGETS, "v")})
    return SelectionContext(train, splits, model or Bigram(), Tok(), optimizer=optimizer, gradient_clip=clip)


def test_sgd_oracle_matches_the_closed_form():
    eta, n = 0.7, len(TARGETS)
    ctx = context()
    values = MATES(probe_optimizer="sgd", lr=eta, oracle_size=4).oracle(ctx, np.arange(len(POOL)))
    dup = (math.log(math.exp(eta) + V - 1) - eta - math.log(V)) / n
    opp = (math.log(math.exp(eta) + V - 1) - math.log(V)) / n
    assert values[DUPLICATES] == pytest.approx([dup, dup], abs=1e-6) and dup < 0
    assert values[OPPONENT] == pytest.approx(opp, abs=1e-6) and opp > 0
    assert values[UNRELATED] == pytest.approx([0.0] * len(UNRELATED), abs=1e-9)
    assert float(ctx.model.W.abs().sum()) == 0.0  # every probe steps a copy


def test_run_optimizer_probe_is_one_adamw_step_from_the_runs_state_which_it_leaves_alone():
    """The run's AdamW after one real step (state: m, v, step = 1), lr decayed by its schedule: the
    probe's step is the next AdamW step from that state, written out by hand, and the run's own
    moments do not move."""
    torch.manual_seed(0)
    model = Bigram()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
    g1 = torch.randn(V, V)
    model.W.grad = g1.clone()
    opt.step()
    opt.param_groups[0]["lr"] = 0.03  # where a schedule has moved it
    w1 = model.W.detach().clone()
    m_before = opt.state[model.W]["exp_avg"].clone()
    values = MATES(oracle_size=4).oracle(context(model, opt), np.array([1]))  # candidate (1 → 2)
    # the candidate's gradient at w1: row 1 gets softmax(w1[1]) − e_2, every other row 0
    g2 = torch.zeros(V, V)
    g2[1] = torch.softmax(w1[1], 0) - torch.nn.functional.one_hot(torch.tensor(2), V)
    lr, b1, b2, eps, wd = 0.03, 0.9, 0.95, 1e-8, 0.1
    m = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v = b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
    w2 = w1 * (1 - lr * wd) - lr * (m / (1 - b1**2)) / ((v / (1 - b2**2)).sqrt() + eps)

    def target_loss(w):
        return float(np.mean([-torch.log_softmax(w[a], 0)[b] for a, b in TARGETS]))

    assert values[0] == pytest.approx(target_loss(w2) - target_loss(w1), abs=1e-5)
    assert torch.equal(opt.state[model.W]["exp_avg"], m_before) and torch.equal(model.W.detach(), w1)
    copy = optimizer_copy(opt, Bigram())
    assert copy.param_groups[0]["lr"] == 0.03 and int(copy.state[copy.param_groups[0]["params"][0]]["step"]) == 1


def test_run_probe_outside_training_is_one_clear_line():
    with pytest.raises(UserError, match="probe_optimizer"):
        MATES(oracle_size=4).oracle(context(), np.array([0]))


def test_ridge_recovers_a_planted_linear_influence():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) * np.array([1, 2, 0.5, 3, 1, 1]) + 5.0
    w = np.array([0.5, -1.0, 2.0, 0.0, 0.3, -0.2])
    y = x @ w - 3.0 + 0.01 * rng.normal(size=300)
    model, report = fit_influence_model(x, y, [1e-6, 1.0, 100.0], 0.1, 0)
    fresh = rng.normal(size=(50, 6)) * 2 + 5.0
    assert model.predict(fresh) == pytest.approx(fresh @ w - 3.0, abs=0.05)
    assert report["heldout_pairs"] == 30 and report["heldout_spearman"] > 0.99 and report["alpha"] < 100
    # in units of the raw features: weights / scale recover w
    assert model.weights * model.target_scale / model.feature_scale == pytest.approx(w, abs=0.01)
    again = RidgeInfluenceModel.from_state(model.state_dict())
    assert np.array_equal(again.predict(fresh), model.predict(fresh))


def test_ridge_with_more_dimensions_than_pairs_is_the_dual_solution():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 20)), rng.normal(size=8)
    dual = RidgeInfluenceModel.fit(x, y, 0.5)
    xs = (x - x.mean(0)) / x.std(0)
    z = (y - y.mean()) / y.std()
    assert dual.weights == pytest.approx(np.linalg.solve(xs.T @ xs + 0.5 * np.eye(20), xs.T @ z), abs=1e-8)


def test_gumbel_top_is_seeded_by_stage_and_tends_to_the_plain_top_k():
    scores = np.arange(20.0)
    scorer = SimpleNamespace(seed=3, stage=1, budget=0.2)
    ctx = KeepContext(None, scorer)
    assert np.flatnonzero(GumbelTop(temperature=0.0).keep(scores, ctx)).tolist() == [16, 17, 18, 19]
    assert np.flatnonzero(GumbelTop(temperature=1e-4).keep(scores, ctx)).tolist() == [16, 17, 18, 19]
    a = GumbelTop(temperature=5.0).keep(scores, ctx)
    assert a.sum() == 4 and np.array_equal(a, GumbelTop(temperature=5.0).keep(scores, ctx))
    draws = []
    for stage in range(2, 30):
        scorer.stage = stage
        draws.append(np.flatnonzero(GumbelTop(temperature=5.0).keep(scores, ctx)))
    assert any(not np.array_equal(d, np.flatnonzero(a)) for d in draws)  # another stage, another draw
    assert np.mean([d.mean() for d in draws]) > 12  # still leaning to the high scores (a uniform draw: 9.5)


def test_selection_from_predictions_keeps_the_predicted_loss_reducers(monkeypatch):
    """With the oracle and features stubbed: the planted influence is recovered, and the kept 20% are
    the rows of the most negative predicted I(x); every stage's pairs and the model are in the state."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(POOL) * 10, 3))
    planted = x @ np.array([1.0, -2.0, 0.5])
    train = datasets.Dataset.from_dict({"id": [f"t{i}" for i in range(len(x))], "source": ["s"] * len(x)})
    ctx = SelectionContext(train, datasets.DatasetDict({"train": train, "val": train}), Bigram(), Tok())
    scorer = MATES(oracle_size=40, selector=GumbelTop(temperature=0.0), seed=0, alphas=[1e-6])
    monkeypatch.setattr(scorer, "features", lambda ctx: x)
    monkeypatch.setattr(scorer, "oracle", lambda ctx, rows: planted[rows])
    initial = scorer.select(ctx)  # before training: random (stage 0)
    assert initial.metadata["cost"]["stage"] == 0 and initial.kept.sum() == 14
    scorer.for_rescoring(None)
    selection = scorer.select(ctx)
    assert set(selection.kept_rows) == set(np.argsort(planted)[:14])
    cost = selection.metadata["cost"]
    assert cost["stage"] == 1 and cost["oracle_probes"] == 40 and cost["influence_model"]["heldout_spearman"] > 0.99
    state = scorer.state_dict()
    assert state["stage"] == 1 and len(state["pairs"][0]["ids"]) == 40
    static = MATES(oracle_size=40, selector=GumbelTop(temperature=0.0), seed=0, refit=False)
    static.load_state_dict(state)
    static.for_rescoring(None)
    monkeypatch.setattr(static, "features", lambda ctx: x)
    again = static.select(ctx)  # reuses the restored model: no probes
    assert again.metadata["cost"]["oracle_probes"] == 0 and np.array_equal(again.kept, selection.kept)


def test_bad_budgets_are_one_line():
    with pytest.raises(UserError, match="oracle_size"):
        MATES(oracle_size=2)
    with pytest.raises(UserError, match="rescore_every"):
        MATES(rescore_every=0)
    scorer = MATES(oracle_size=100, probe_optimizer="sgd", lr=0.1)
    with pytest.raises(UserError, match="exceeds the pool"):  # at the initial selection, before any training
        scorer.score(context())


def test_stage_zero_and_the_gumbel_draw_do_not_replay_the_noise_stream():
    """The noise transforms flag rows by default_rng(seed).random(n) < p; MATES's stage-0 random scores
    and the Gumbel draw use streams of their own, so neither keeps or drops exactly the noisy rows."""
    n, seed = 400, 0
    noise = np.random.default_rng(seed).random(n)
    train = datasets.Dataset.from_dict({"id": [str(i) for i in range(n)], "source": ["s"] * n})
    stage0 = MATES(seed=seed).score(SelectionContext(train))
    assert abs(np.corrcoef(stage0, noise)[0, 1]) < 0.2
    kept = GumbelTop(temperature=1.0).keep(np.zeros(n), KeepContext(None, SimpleNamespace(seed=seed, stage=0, budget=0.5)))
    assert abs(np.corrcoef(kept.astype(float), noise)[0, 1]) < 0.2


def test_scores_are_predictions_in_z_units():
    """The selector's τ = 0.5 is set for the z-normalised predictions of the authors' model: a planted
    influence of tiny magnitude (loss changes of 1e-4) still scores with unit spread."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 2))
    planted = 1e-4 * (x @ np.array([1.0, 1.0]))
    train = datasets.Dataset.from_dict({"id": [f"t{i}" for i in range(60)], "source": ["s"] * 60})
    scorer = MATES(oracle_size=60, holdout=0.0, alphas=[1e-6], seed=0)
    scorer.features = lambda ctx: x
    scorer.oracle = lambda ctx, rows: planted[rows]
    scorer.for_rescoring(None)
    scores = scorer.score(SelectionContext(train, datasets.DatasetDict({"train": train, "val": train}), Bigram(), Tok()))
    assert scores == pytest.approx(-(planted - planted.mean()) / planted.std(), abs=1e-6)


def test_sharding_strategies_are_refused_before_anything_is_built():
    from assay.trainers import check_run

    def spec(strategy, shards_parameters, shards_optimizer_state, probe="run"):
        trainer = SimpleNamespace(strategy=strategy, shards_parameters=shards_parameters, shards_optimizer_state=shards_optimizer_state)
        return SimpleNamespace(trainer=trainer, dynamics=SimpleNamespace(name="off"), selection=MATES(probe_optimizer=probe, lr=0.1),
                               objective=SimpleNamespace(collation={}), model=SimpleNamespace())

    with pytest.raises(UserError, match="trainer.strategy"):
        check_run(spec("fsdp", True, True))
    with pytest.raises(UserError, match="probe_optimizer=run"):
        check_run(spec("deepspeed_zero2", False, True))
    check_run(spec("deepspeed_zero2", False, True, probe="sgd"))  # whole parameters on every rank: the sgd probe can run
    check_run(spec("ddp", False, False))
