"""The losses TRL has that assay added, beyond parity with TRL (test_trl_parity.py): hand-derived values,
BCO's reward shift as checkpointed state, AOT's per-rank records, MPO's composition, and per-example
weights from a data column in every aggregator."""

from __future__ import annotations

import math

import datasets
import pytest
import torch

from assay.errors import UserError, explain
from assay.objectives.aggregators import DrDPO, Mean, dr_dpo_loss, mean_loss
from assay.objectives.base import ObjectiveOutput
from assay.objectives.controllers import BetaDPO
from assay.objectives.losses.aot import AOT, sorted_gap_loss
from assay.objectives.losses.aot_unpaired import AOTUnpaired
from assay.objectives.losses.apo_down import APODown
from assay.objectives.losses.apo_zero import APOZero
from assay.objectives.losses.bco_pair import BCOPair
from assay.objectives.losses.discopop import DiscoPOP, discopop_loss
from assay.objectives.losses.dpo import DPO
from assay.objectives.losses.exo_pair import EXOPair
from assay.objectives.losses.mpo import MPO
from assay.objectives.losses.nca_pair import NCAPair
from assay.objectives.losses.sft import SFT
from assay.objectives.losses.sigmoid_norm import SigmoidNorm
from assay.objectives.losses.sppo_hard import SPPOHard
from assay.objectives.preference import PairScores

NEW = [EXOPair, NCAPair, BCOPair, SPPOHard, AOT, AOTUnpaired, APOZero, APODown, DiscoPOP, SigmoidNorm, MPO]


def scores(rc_ratio, rr_ratio, nc=None, nr=None) -> PairScores:
    """Scores with the given log-ratios (policy = ratio, reference = 0)."""
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    n = len(rc_ratio)
    return PairScores(t(rc_ratio), t(rr_ratio), t(nc or [1.0] * n), t(nr or [1.0] * n), torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64))


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---- hand-derived values -----------------------------------------------------------------------


def test_hand_derived_values():
    """ρ_w = 2, ρ_l = -2 (h = 4), β = 0.5: z = βh = 2, r_w = 1, r_l = -1."""
    s = scores([2.0], [-2.0], [4.0], [1.0])
    val = lambda obj: obj.from_scores(s).loss.item()  # noqa: E731
    sp = lambda x: math.log1p(math.exp(-x))  # -log σ(x)  # noqa: E731
    assert val(NCAPair(beta=0.5)) == pytest.approx(sp(1) + 0.5 * sp(-1) + 0.5 * sp(1))
    assert val(BCOPair(beta=0.5)) == pytest.approx(sp(1) + sp(1))
    assert val(SPPOHard(beta=0.5)) == pytest.approx((2 - 1) ** 2 + (-2 + 1) ** 2)  # 1/(2β) = 1
    assert val(APOZero(beta=0.5)) == pytest.approx((1 - sig(1)) + sig(-1))
    assert val(APODown(beta=0.5)) == pytest.approx(sig(1) + 1 - sig(2))
    eps = 0.1
    q = sig(2)
    assert val(EXOPair(beta=0.5, epsilon=eps)) == pytest.approx(q * (math.log(q) - math.log(1 - eps)) + (1 - q) * (math.log(1 - q) - math.log(eps)))
    tau = 0.05
    assert val(DiscoPOP(beta=0.5, tau=tau)) == pytest.approx((1 - sig(2 / tau)) * sp(2) + sig(2 / tau) * math.exp(-2))
    # length-normalised: h̄ = 2/4 - (-2)/1 = 2.5, β = 0.5 → -log σ(1.25)
    assert val(SigmoidNorm(beta=0.5)) == pytest.approx(sp(1.25))
    # MPO: 0.8·DPO + 0.2·BCO + 1.0·NLL(y_w) per token = 0.8·sp(2) + 0.2·2sp(1) - lp_w/|y_w| (lp_w = 2, |y_w| = 4)
    assert val(MPO(beta=0.5)) == pytest.approx(0.8 * sp(2) + 0.2 * 2 * sp(1) - 2 / 4)


def test_exo_is_minimised_where_the_policy_preference_matches_the_smoothed_label():
    eps = 0.05
    h = torch.linspace(-100, 100, 20001, dtype=torch.float64)
    loss = EXOPair(beta=1.0, epsilon=eps).from_scores(scores(h.tolist(), [0.0] * h.numel())).loss
    assert sig(h[loss.argmin()].item()) == pytest.approx(1 - eps, abs=1e-3) and loss.min() >= -1e-12


def test_discopop_is_finite_where_the_product_form_overflows():
    z = torch.tensor([-200.0, -90.0, 0.0, 90.0, 200.0], requires_grad=True)
    loss = discopop_loss(z, 1.0, 0.05)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    assert loss[0].item() == pytest.approx(200.0, rel=1e-6)  # the logistic part, σ(z/τ) = 0
    naive = (1 - torch.sigmoid(z / 0.05)) * -torch.nn.functional.logsigmoid(z) + torch.sigmoid(z / 0.05) * torch.exp(-z)
    assert not torch.isfinite(naive[0])  # 0·inf: TRL's form


@pytest.mark.parametrize("make", NEW)
def test_no_nan_or_inf_at_extreme_margins(make):
    big = torch.tensor([1e4, -1e4], requires_grad=True)
    s = PairScores(big, -big, torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0]), torch.zeros(2), torch.zeros(2))
    obj = make()
    out = obj.from_scores(s, training=True, controller=obj.build_controller())
    obj.aggregate(out).backward()
    assert torch.isfinite(out.loss).all() and torch.isfinite(big.grad).all()
    assert all(torch.isfinite(v).all() for v in out.metrics.values())


# ---- BCO's reward shift: running state in a checkpoint ---------------------------------------------


def test_bco_reward_shift_is_the_running_mean_of_batch_mean_rewards():
    obj = BCOPair(beta=0.5, reward_shift=True)
    state = obj.build_controller()
    assert obj.build_controller() is not state and BCOPair().build_controller() is None
    batches = [scores([2.0, 4.0], [0.0, -2.0]), scores([6.0], [2.0]), scores([-4.0, 0.0], [0.0, 0.0])]
    means = [(1.0 + 2.0 + 0.0 - 1.0) / 4, (3.0 + 1.0) / 2, (-2.0 + 0.0 + 0.0 + 0.0) / 4]  # mean of β·ρ over the 2B rewards
    for k, s in enumerate(batches):
        out = obj.from_scores(s, training=True, controller=state)
        delta = sum(means[: k + 1]) / (k + 1)  # updated before the loss
        r_w, r_l = 0.5 * s.chosen_ratio, 0.5 * s.rejected_ratio
        expected = -torch.nn.functional.logsigmoid(r_w - delta) - torch.nn.functional.logsigmoid(-(r_l - delta))
        assert torch.allclose(out.loss, expected) and state.mean.item() == pytest.approx(delta)
    before = {k: v.clone() for k, v in state.state_dict().items()}
    obj.from_scores(batches[0], training=False, controller=state)  # evaluation reads δ only
    assert all(torch.equal(before[k], v) for k, v in state.state_dict().items())
    resumed = obj.build_controller()
    resumed.load_state_dict(state.state_dict())
    assert set(state.state_dict()) == {"mean", "count"} and int(resumed.count) == 3
    assert torch.equal(obj.from_scores(batches[1], True, resumed).loss, obj.from_scores(batches[1], True, state).loss)


def test_bco_reward_shift_refuses_a_controller():
    with pytest.raises(UserError, match="objective/controller"):
        BCOPair(reward_shift=True, controller=BetaDPO(seed=0))


def test_a_module_owns_the_loss_state_so_it_is_checkpointed():
    from assay.module import AssayModule
    from assay.config import EvalConfig, OptimConfig

    module = AssayModule(torch.nn.Linear(1, 1), None, BCOPair(reward_shift=True), OptimConfig(), EvalConfig())
    assert {"controller.mean", "controller.count"} <= set(module.state_dict())


# ---- AOT: a loss per rank -------------------------------------------------------------------------


def test_aot_sorts_apart_and_records_each_rank_on_the_pair_of_that_rank():
    policy = torch.tensor([3.0, -1.0, 1.0], dtype=torch.float64)
    ref = torch.tensor([0.0, 2.0, -2.0], dtype=torch.float64)
    loss = sorted_gap_loss(policy, ref, 1.0, 0.0)
    # sorted policy [-1, 1, 3] vs sorted ref [-2, 0, 2]: gaps 1, 1, 1 at ranks 0, 1, 2
    assert torch.allclose(loss, torch.full((3,), math.log1p(math.exp(-1.0)), dtype=torch.float64))
    loss = sorted_gap_loss(policy, torch.tensor([0.0, 0.0, 10.0], dtype=torch.float64), 1.0, 0.0)
    # gaps: -1-0, 1-0, 3-10 at the pairs whose policy values are -1 (pair 1), 1 (pair 2), 3 (pair 0)
    expected = torch.tensor([-7.0, -1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(loss, -torch.nn.functional.logsigmoid(expected))


@pytest.mark.parametrize("overrides,key", [
    (["objective=aot", "data.format=preference", "objective/aggregator=dr_dpo"], "objective/aggregator"),
    (["objective=aot_unpaired", "data.format=preference", "objective/controller=beta_dpo"], "objective/controller"),
    (["objective=aot", "data.format=preference", "objective.wpo=true"], "objective.wpo"),
    (["objective=mpo", "data.format=preference", "objective.losses=[dpo,aot]", "objective.loss_weights=[1,1]", "objective/aggregator=dr_dpo"],
     "objective/aggregator"),
    (["objective=aot", "data.format=preference", "data.weight_column=reward_gap"], "data.weight_column"),
    (["objective=mpo", "data.format=preference", "objective.losses=[dpo,nope]", "objective.loss_weights=[1,1]"], "objective.losses"),
    (["objective=mpo", "data.format=preference", "objective.loss_weights=[1]"], "objective.loss_weights"),
    (["objective=mpo", "data.format=preference", "objective.losses=[mpo]", "objective.loss_weights=[1]"], "objective.losses"),
    (["objective=dpo", "data.format=preference", "objective.ld_alpha=1.5"], "objective.ld_alpha"),
    (["objective=exo_pair", "data.format=preference", "objective.epsilon=0"], "objective.epsilon"),
])
def test_refusals_are_one_line_naming_the_key(compose_cfg, overrides, key):
    from assay.config import validate

    with pytest.raises(Exception) as err:
        validate(compose_cfg(overrides))
    line = explain(err.value)
    assert "\n" not in line and key in line, line


def test_every_new_loss_composes_and_validates(compose_cfg):
    from assay.config import validate

    for name in ("exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm", "mpo"):
        spec = validate(compose_cfg([f"objective={name}", "data.format=preference"]))
        assert spec.objective.name == name == spec.objective.method and spec.objective.needs_reference
    spec = validate(compose_cfg(["objective=mpo", "data.format=preference", "objective.losses=[ipo,simpo,sft]", "objective.loss_weights=[1,0.5,2]",
                                 "objective.ld_alpha=0.5", "objective.wpo=true", "data.weight_column=reward_gap"]))
    assert spec.objective.ld_alpha == 0.5 and spec.objective.reference_heads and "reward_gap" in spec.data.keep_columns


# ---- per-example weights --------------------------------------------------------------------------


def test_weighted_mean_and_weights_of_one_are_the_plain_mean():
    loss = torch.tensor([1.0, 2.0, 4.0, 8.0])
    w = torch.tensor([1.0, 0.0, 3.0, 0.5])
    assert mean_loss(loss, weight=w).item() == pytest.approx((1 + 12 + 4) / 4.5)
    kept = torch.tensor([1.0, 1.0, 0.0, 1.0])
    assert mean_loss(loss, kept, w).item() == pytest.approx((1 + 4) / 1.5)
    assert mean_loss(loss, weight=torch.ones(4)).item() == pytest.approx(loss.mean().item())
    assert mean_loss(loss, weight=torch.zeros(4)).item() == 0.0
    inf = torch.tensor([1.0, float("inf")], requires_grad=True)
    value = mean_loss(inf, weight=torch.tensor([1.0, 0.0]))
    value.backward()
    assert value.item() == 1.0 and torch.isfinite(inf.grad).all()


def test_weighted_dr_dpo_is_the_weighted_expectation():
    loss = torch.tensor([0.2, 1.5, 3.0], dtype=torch.float64)
    w = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    bp = 0.7
    value, weights = dr_dpo_loss(loss, bp, weight=w)
    expected = -bp * math.log(sum(wi * math.exp(-li / bp) for wi, li in zip(w.tolist(), loss.tolist())) / w.sum().item())
    assert value.item() == pytest.approx(expected)
    raw = w * torch.exp(-loss / bp)
    assert torch.allclose(weights, raw / raw.sum())
    # integer weights are repeated samples
    repeated, _ = dr_dpo_loss(torch.tensor([0.2, 0.2, 1.5, 3.0], dtype=torch.float64), bp)
    value2, _ = dr_dpo_loss(loss, bp, weight=torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))
    assert value2.item() == pytest.approx(repeated.item())
    plain, _ = dr_dpo_loss(loss, bp)
    assert dr_dpo_loss(loss, bp, weight=torch.ones(3, dtype=torch.float64))[0].item() == pytest.approx(plain.item())


@pytest.mark.parametrize("aggregator", [Mean(), DrDPO(beta_prime=0.5)])
def test_integer_weights_equal_repeating_examples_through_the_objective(aggregator):
    s = scores([1.0, -0.5, 2.0], [0.0, 0.5, -1.0])
    obj = DPO(beta=0.5, aggregator=aggregator)
    out = obj.from_scores(s)
    out.weight = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    rep = scores([1.0, 1.0, 2.0], [0.0, 0.0, -1.0])
    assert obj.aggregate(out).item() == pytest.approx(obj.aggregate(obj.from_scores(rep)).item())


def test_sft_and_preference_compute_carry_the_batch_weights():
    out = ObjectiveOutput(torch.tensor([1.0, 3.0]), weight=torch.tensor([3.0, 1.0]))
    assert SFT().aggregate(out).item() == pytest.approx(1.5) and out.detached().weight is not None


def test_example_weights_column_is_checked_and_copied():
    from assay.data.examples import example_weights

    ds = datasets.Dataset.from_list([{"id": "a", "w": 1}, {"id": "b", "w": 0.5}])
    assert example_weights(ds, "w", "train")["weight"] == [1.0, 0.5]
    assert "weight" not in example_weights(ds.remove_columns("w"), "w", "val").column_names
    for bad, fragment in (([-1, 1], "id a"), ([float("nan"), 1], "id a"), (["1", "x"], "id b"), ([0, 0], "every training weight is 0")):
        with pytest.raises(UserError) as err:
            example_weights(datasets.Dataset.from_list([{"id": "a", "w": bad[0]}, {"id": "b", "w": bad[1]}]), "w", "train")
        assert fragment in explain(err.value) and "data.weight_column" in explain(err.value)
    with pytest.raises(UserError, match="no such column"):
        example_weights(ds, "nope", "train")


def test_catalog_lists_the_modifier_cards(capsys):
    from assay import catalog

    catalog.main(["objective/modifier", "ld_dpo"])
    out = capsys.readouterr().out
    assert "arXiv 2409.06411" in out and "ld_alpha" in out
    catalog.main(["objective/modifier", "wpo"])
    assert "arXiv 2406.11827" in capsys.readouterr().out
