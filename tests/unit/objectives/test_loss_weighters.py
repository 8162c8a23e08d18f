"""DataFlex's online loss weighters (Sow et al. 2025): linupper, quadratic, extremes as aggregators."""

import math

import pytest
import torch

from assay.errors import explain
from assay.objectives.aggregators import Mean
from assay.objectives.loss_weighters import Extremes, LinUpper, Quadratic, loss_weights

# Losses [1, 2, 3, 5], δ = 1: ℓ_min = 1, ℓ_max = 5, ℓ̃ = (2ℓ − 6)/4 = [−1, −0.5, 0, 1].
LOSS = [1.0, 2.0, 3.0, 5.0]
E, RE = math.e, math.exp(0.5)
HAND = {
    # linupper g = min(ℓ̃ + 1, 1) = [0, 0.5, 1, 1]
    "linupper": [1.0, RE, E, E],
    # quadratic g = 1 − ℓ̃² = [0, 0.75, 1, 0]
    "quadratic": [1.0, math.exp(0.75), E, 1.0],
    # extremes g = |ℓ̃| = [1, 0.5, 0, 1]
    "extremes": [E, RE, 1.0, E],
}
CLASSES = {"linupper": LinUpper, "quadratic": Quadratic, "extremes": Extremes}


@pytest.mark.parametrize("name", list(HAND))
def test_weights_and_weighted_loss_by_hand(name):
    unnormalised = HAND[name]
    expected_w = [u / sum(unnormalised) for u in unnormalised]
    w = loss_weights(torch.tensor(LOSS, dtype=torch.float64), name)
    assert torch.allclose(w, torch.tensor(expected_w, dtype=torch.float64), atol=1e-12)
    assert math.isclose(w.sum().item(), 1.0, rel_tol=1e-12)
    value, recorded = CLASSES[name]().reduce(torch.tensor(LOSS, dtype=torch.float64))
    assert recorded is None
    assert math.isclose(value.item(), sum(wi * li for wi, li in zip(expected_w, LOSS)), rel_tol=1e-12)


def test_linupper_numbers_written_out():
    # w = [1, e^0.5, e, e] / (1 + e^0.5 + 2e) = [0.12368, 0.20392, 0.33620, 0.33620]; L = Σ w ℓ = 3.22112
    value, _ = LinUpper().reduce(torch.tensor(LOSS))
    assert math.isclose(value.item(), 3.22112, abs_tol=1e-5)


@pytest.mark.parametrize("name", list(HAND))
def test_the_weights_carry_no_gradient(name):
    loss = torch.tensor(LOSS, dtype=torch.float64, requires_grad=True)
    value, _ = CLASSES[name]().reduce(loss)
    value.backward()
    unnormalised = HAND[name]
    # ∂L/∂ℓ_i = w_i: nothing flows through the weights' dependence on the losses
    assert torch.allclose(loss.grad, torch.tensor([u / sum(unnormalised) for u in unnormalised], dtype=torch.float64), atol=1e-12)


def test_delta_and_temperature():
    loss = torch.tensor(LOSS, dtype=torch.float64)
    # δ = 2 on linupper: ℓ̃ = [−2, −1, 0, 2], g = min(ℓ̃ + 2, 2) = [0, 1, 2, 2]; r = 2 halves g
    w = loss_weights(loss, "linupper", delta=2.0, r=2.0)
    u = [1.0, math.exp(0.5), E, E]
    assert torch.allclose(w, torch.tensor([x / sum(u) for x in u], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("name", list(HAND))
def test_equal_losses_give_the_mean(name):
    loss = torch.full((5,), 0.7, dtype=torch.float64)
    assert torch.allclose(loss_weights(loss, name), torch.full((5,), 0.2, dtype=torch.float64))
    assert math.isclose(CLASSES[name]().reduce(loss)[0].item(), Mean().reduce(loss)[0].item(), rel_tol=1e-12)


def test_kept_mask_and_example_weights():
    loss = torch.tensor([1.0, 2.0, 3.0, 5.0, 100.0, float("nan")], dtype=torch.float64)
    kept = torch.tensor([1, 1, 1, 1, 0, 0])
    value, _ = LinUpper().reduce(loss, kept)
    ref, _ = LinUpper().reduce(loss[:4])
    assert math.isclose(value.item(), ref.item(), rel_tol=1e-12)
    # an example weight of 2 on the first sample counts it twice in the softmax: w ∝ [2, e^0.5, e, e]
    w = loss_weights(torch.tensor(LOSS, dtype=torch.float64), "linupper", weight=torch.tensor([2.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    u = [2.0, RE, E, E]
    assert torch.allclose(w, torch.tensor([x / sum(u) for x in u], dtype=torch.float64), atol=1e-12)


def test_composes_with_sft_and_dpo(compose_cfg):
    from assay.config import validate

    for overrides in (["objective/aggregator=linupper"],
                      ["objective=dpo", "data.format=preference", "objective/aggregator=extremes", "objective.aggregator.delta=0.5"]):
        cfg = validate(compose_cfg(overrides))
        agg = cfg.objective.aggregator
        assert type(agg).__name__ in ("LinUpper", "Extremes"), agg
        assert cfg.objective.method.endswith("+" + agg.name)
    from assay.objectives.losses.dpo import DPO
    from assay.objectives.preference import PairScores

    h = torch.tensor([2.0, -1.0, 0.5, 0.0])
    zero, ones = torch.zeros(4), torch.ones(4)
    obj = DPO(aggregator=Quadratic())
    out = obj.from_scores(PairScores(h, zero, ones, ones, zero, zero))
    expected = (loss_weights(out.loss, "quadratic") * out.loss).sum()
    assert math.isclose(obj.aggregate(out).item(), expected.item(), rel_tol=1e-6)


def test_bad_values_are_one_line(compose_cfg):
    from assay.config import validate

    for overrides, needle in ((["objective/aggregator=quadratic", "objective.aggregator.delta=0"], "objective.aggregator.delta"),
                              (["objective/aggregator=linupper", "objective.aggregator.r=-1"], "objective.aggregator.r"),
                              (["objective/aggregator=extremes", "objective.aggregator.scope=world"], "objective.aggregator.scope")):
        with pytest.raises(Exception) as err:
            validate(compose_cfg(overrides))
        line = explain(err.value)
        assert "\n" not in line and needle in line, line
