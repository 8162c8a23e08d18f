"""DoReMi's proxy step (sangmichaelxie/doremi, trainer.py, doremiv1) against numbers derived by hand:
per-token clipping of the excess loss, the α update, and the α-reweighted per-token loss."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from assay.mixing.group_dro import clipped_excess, doremi_update, reweighted_loss
from assay.mixing.group_dro import GroupDRO

# Two examples: one of domain a with two response tokens, one of domain b with one (then padding).
POLICY = torch.tensor([[-1.0, -3.0], [-0.5, 0.0]], dtype=torch.float64)  # log p_θ per token
REFERENCE = torch.tensor([[-2.0, -1.0], [-1.0, 0.0]], dtype=torch.float64)  # log p_ref per token
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
DOMAINS = torch.tensor([0, 1])


def test_excess_loss_is_clipped_per_token_then_averaged_over_the_domain_tokens():
    # ℓ_θ − ℓ_ref per token: a: (1 − 2, 3 − 1) = (−1, 2) -> clipped (0, 2); b: 0.5 − 1.0 = −0.5... careful: ℓ = −log p
    # a: ℓ_θ = (1, 3), ℓ_ref = (2, 1) -> (−1, 2) -> (0, 2), sum 2 over 2 tokens; b: ℓ_θ = 0.5, ℓ_ref = 1 -> −0.5 -> 0
    sums, counts = clipped_excess(POLICY, REFERENCE, MASK, DOMAINS, 2)
    assert sums.tolist() == [2.0, 0.0] and counts.tolist() == [2.0, 1.0]
    # λ_a = 1.0; clipping the example's mean excess instead (the resampling variant) would give 0.5
    assert (sums / counts)[0].item() == 1.0
    per_example = max(((1 - 2) + (3 - 1)) / 2, 0.0)
    assert per_example == 0.5


def test_update_is_exponentiated_gradient_with_smoothing():
    new = doremi_update(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64), eta=1.0, smoothing=0.1)
    a = math.e / (math.e + 1)
    assert new.tolist() == pytest.approx([0.9 * a + 0.05, 0.9 * (1 - a) + 0.05], abs=1e-12)


def test_loss_is_the_alpha_weighted_token_mean():
    weights = torch.tensor([0.7, 0.3], dtype=torch.float64)
    loss = reweighted_loss(POLICY, MASK, DOMAINS, weights)
    # tokens: a (ℓ 1 and 3) at weight 0.7, b (ℓ 0.5) at weight 0.3
    assert loss.item() == pytest.approx((0.7 * (1 + 3) + 0.3 * 0.5) / (0.7 * 2 + 0.3), abs=1e-12)


def _dro(monkeypatch, reference=REFERENCE, **kw):
    import assay.objectives.logps as logps

    monkeypatch.setattr(logps, "sequence_logps", lambda model, *a: SimpleNamespace(token_logps=reference))
    args = dict(eta=1.0, smoothing=0.0, update_every=1, warmup_steps=0)
    args.update(kw)
    return GroupDRO(["a", "b"], np.array([0.5, 0.5]), reference=torch.nn.Identity(), **args)


def _out(policy=POLICY):
    token_logps = policy.clone().requires_grad_(True)
    return SimpleNamespace(token_logps=token_logps, token_mask=MASK.bool())


BATCH = {"input_ids": None, "attention_mask": None, "labels": None, "sources": ["a", "b"]}


def test_step_updates_alpha_first_and_the_loss_reads_the_updated_alpha(monkeypatch):
    dro = _dro(monkeypatch)
    loss = dro(_out(), BATCH, step_ends=True, global_step=0)
    # λ = (1, 0): α = softmax(log 0.5 + λ) = (e/(e+1), 1/(e+1))
    a = math.e / (math.e + 1)
    assert dro.weights.tolist() == pytest.approx([a, 1 - a], abs=1e-12)
    assert dro.scores.tolist() == [1.0, 0.0]
    assert loss.item() == pytest.approx((a * 4 + (1 - a) * 0.5) / (a * 2 + (1 - a)), abs=1e-12)
    assert int(dro.updates) == 1 and dro.average.tolist() == pytest.approx([a, 1 - a])


def test_accumulation_pools_the_step_and_an_absent_domain_keeps_its_score(monkeypatch):
    dro = _dro(monkeypatch)
    dro(_out(), BATCH, step_ends=True, global_step=0)  # step 1: λ = (1, 0)
    only_a = {**BATCH, "sources": ["a", "a"]}
    # step 2 in two micro-batches, both domain a: no update until the second
    before = dro.weights.clone()
    dro(_out(), only_a, step_ends=False, global_step=1)
    assert torch.equal(dro.weights, before)
    dro(_out(), only_a, step_ends=True, global_step=1)
    # the pooled λ_a: both micro-batches' tokens (row 0: 0 + 2, row 1: 0 over 1 token) twice -> 4 / 6
    assert dro.scores.tolist() == pytest.approx([4 / 6, 0.0])  # b absent: keeps its previous λ (0)
    assert int(dro.updates) == 2
    first = np.array([math.e / (math.e + 1), 1 / (math.e + 1)])
    logits = np.log(first) + np.array([4 / 6, 0.0])
    second = np.exp(logits) / np.exp(logits).sum()
    assert dro.weights.tolist() == pytest.approx(second.tolist(), abs=1e-12)
    assert dro.average.tolist() == pytest.approx(((first + second) / 2).tolist(), abs=1e-12)


def test_gradient_flows_through_the_policy_tokens_only_with_alpha_detached(monkeypatch):
    dro = _dro(monkeypatch, update_every=10)  # no update this step: α stays (0.5, 0.5)
    out = _out()
    dro(out, BATCH, step_ends=True, global_step=0).backward()
    # d/d logp of −Σ α ℓ... loss = −Σ α_d logp / Σ α_d: every counted token gets −α_d / (0.5·3)
    expected = -torch.tensor([[0.5, 0.5], [0.5, 0.0]], dtype=torch.float64) / 1.5
    assert torch.allclose(out.token_logps.grad, expected)
