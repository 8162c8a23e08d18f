"""Objective math against hand-derived numbers."""

import math

import torch

from assay.objectives.losses.dpo import dpo_loss
from assay.objectives.losses.sft import sft_loss


def test_sft_loss_is_mean_token_nll():
    """Completion log-probs sum to -3.0 over 2 tokens -> loss 1.5; -2.0 over 4 -> 0.5."""
    loss = sft_loss(torch.tensor([-3.0, -2.0]), torch.tensor([2, 4]))
    assert torch.allclose(loss, torch.tensor([1.5, 0.5]))


def test_dpo_loss_hand_derived():
    """π_w=-1, π_l=-3, ref_w=-2, ref_l=-2, β=0.5.
    chosen ratio = 1, rejected ratio = -1, h = 2, βh = 1, loss = -log σ(1) = log(1+e^-1) = 0.313262.
    rewards: chosen β·1 = 0.5, rejected β·(-1) = -0.5."""
    loss, rc, rr = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), 0.5)
    assert math.isclose(loss.item(), math.log1p(math.exp(-1.0)), rel_tol=1e-6)
    assert math.isclose(loss.item(), 0.3132617, rel_tol=1e-6)
    assert rc.item() == 0.5 and rr.item() == -0.5


def test_dpo_equal_policy_and_reference_gives_log2():
    """At initialisation (policy = reference) h = 0 and every pair's loss is log 2."""
    x = torch.randn(5)
    y = torch.randn(5)
    loss, _, _ = dpo_loss(x, y, x, y, beta=0.1)
    assert torch.allclose(loss, torch.full((5,), math.log(2.0)))


def test_swapping_chosen_and_rejected_mirrors_the_margin():
    """ℓ(h) - ℓ(-h) = -βh (softplus identity), and the rewards swap."""
    pc, pr, rc, rr = torch.tensor([-1.2]), torch.tensor([-2.5]), torch.tensor([-1.5]), torch.tensor([-2.0])
    beta = 0.3
    l1, c1, r1 = dpo_loss(pc, pr, rc, rr, beta)
    l2, c2, r2 = dpo_loss(pr, pc, rr, rc, beta)
    h = (pc - rc) - (pr - rr)
    assert torch.allclose(l1 - l2, -beta * h)
    assert torch.allclose(c1, r2) and torch.allclose(r1, c2)


def test_dpo_is_finite_at_extreme_margins():
    big = torch.tensor([1e4, -1e4])
    loss, _, _ = dpo_loss(big, -big, torch.zeros(2), torch.zeros(2), beta=1.0)
    assert torch.isfinite(loss).all()
    assert loss[0].item() == 0.0 and math.isclose(loss[1].item(), 2e4, rel_tol=1e-6)
