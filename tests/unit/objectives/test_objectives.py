"""Preference losses, aggregators and the β-DPO controller against hand-derived numbers and properties."""

import json
import math

import pytest
import torch

from assay.errors import UserError, explain
from assay.objectives.aggregators import DrDPO, Mean, dr_dpo_loss, mean_loss
from assay.objectives.beta_dpo import BetaDPOController, gaussian_filter_weights, keep_count
from assay.objectives.controllers import BetaDPO, NoController
from assay.objectives.losses.cdpo import ConservativeDPO, cdpo_loss
from assay.objectives.losses.dpo import DPO, dpo_loss
from assay.objectives.losses.hinge import Hinge, hinge_loss
from assay.objectives.losses.ipo import IPO, ipo_loss
from assay.objectives.losses.orpo import ORPO, log_odds, orpo_loss
from assay.objectives.losses.rdpo import RobustDPO, rdpo_loss
from assay.objectives.losses.simpo import SimPO, simpo_loss
from assay.objectives.preference import PairScores

SP1 = math.log1p(math.exp(-1.0))  # softplus(-1) = -log σ(1) = 0.3132617


def scores(pc, pr, rc=None, rr=None, nc=None, nr=None) -> PairScores:
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    n = len(pc)
    return PairScores(t(pc), t(pr), t(nc or [1.0] * n), t(nr or [1.0] * n), None if rc is None else t(rc), None if rr is None else t(rr))


# ---- per-pair losses, hand-derived --------------------------------------------------------------


def test_cdpo_hand_derived():
    """h = 2, β = 0.5 → z = 1; ε = 0.1.
    ℓ = 0.9·softplus(-1) + 0.1·softplus(1) = 0.9·0.3132617 + 0.1·1.3132617 = 0.4132617
    (= softplus(-1) + ε, since softplus(1) - softplus(-1) = 1)."""
    loss = cdpo_loss(torch.tensor([2.0]), 0.5, 0.1)
    assert math.isclose(loss.item(), 0.4132617, rel_tol=1e-6)
    assert math.isclose(loss.item(), SP1 + 0.1, rel_tol=1e-6)


def test_rdpo_hand_derived():
    """h = 2, β = 0.5, ε = 0.1: ℓ = (0.9·0.3132617 - 0.1·1.3132617) / 0.8 = 0.1506094 / 0.8 = 0.1882617.
    At ε = 0 rDPO and cDPO are DPO."""
    loss = rdpo_loss(torch.tensor([2.0]), 0.5, 0.1)
    assert math.isclose(loss.item(), 0.1882617, rel_tol=1e-6)
    h = torch.tensor([0.3, -1.0, 4.0])
    dpo = -torch.nn.functional.logsigmoid(0.5 * h)
    assert torch.allclose(rdpo_loss(h, 0.5, 0.0), dpo) and torch.allclose(cdpo_loss(h, 0.5, 0.0), dpo)


def test_ipo_hand_derived_uses_length_averaged_margin():
    """ρ_w = 1 over 2 tokens, ρ_l = -1 over 4 tokens → h̄ = 0.5 + 0.25 = 0.75; τ = 0.5 → target 1/(2τ) = 1;
    ℓ = (0.75 - 1)² = 0.0625. The summed margin h = 2 would give (2 - 1)² = 1 instead."""
    s = scores([-1.0], [-3.0], [-2.0], [-2.0], nc=[2.0], nr=[4.0])
    assert math.isclose(s.mean_margin.item(), 0.75)
    assert math.isclose(ipo_loss(s.mean_margin, 0.5).item(), 0.0625, rel_tol=1e-6)
    assert math.isclose(IPO(beta=0.5).pair_loss(s, 0.5).item(), 0.0625, rel_tol=1e-6)


def test_hinge_hand_derived():
    """β = 0.5: h = 2 → max(0, 1 - 1) = 0; h = 1 → 0.5; h = -2 → 2."""
    assert torch.allclose(hinge_loss(torch.tensor([2.0, 1.0, -2.0]), 0.5), torch.tensor([0.0, 0.5, 2.0]))


def test_simpo_hand_derived():
    """lp_w = -2 over 2 tokens (mean -1), lp_l = -6 over 3 tokens (mean -2); β = 2, γ = 1:
    z = 2·(-1 - (-2)) - 1 = 1 → ℓ = softplus(-1) = 0.3132617. No reference is read."""
    obj = SimPO(beta=2.0, gamma=1.0)
    s = scores([-2.0], [-6.0], nc=[2.0], nr=[3.0])
    assert math.isclose(obj.pair_loss(s, 2.0).item(), SP1, rel_tol=1e-6)
    assert math.isclose(simpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), 2.0, 1.0).item(), SP1, rel_tol=1e-6)
    assert not obj.needs_reference


def test_orpo_hand_derived():
    """Mean token log-probs: chosen log 0.5 → odds 1, log odds 0; rejected log 0.2 → odds 0.25, log odds -1.3862944.
    log σ(1.3862944) = -log(1 + 0.25) = -0.2231436; NLL(y_w) = -log 0.5 = 0.6931472; λ = 0.1:
    ℓ = 0.6931472 + 0.1·0.2231436 = 0.7154616."""
    loss = orpo_loss(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.2)]), 0.1)
    assert math.isclose(loss.item(), 0.7154616, rel_tol=1e-6)
    assert not ORPO().needs_reference


def _orpo_reference(c: float, r: float, lam: float) -> tuple[float, float]:
    """ORPO's loss and its derivative in the rejected mean log-prob r, at 50 digits, from the formula
    (TRL's odds_ratio_loss): log odds(x) = x - log(1 - e^x), d/dx log odds = 1 / (1 - e^x)."""
    import mpmath

    with mpmath.workdps(50):
        c, r = mpmath.mpf(c), mpmath.mpf(r)
        odds = lambda x: x - mpmath.log(1 - mpmath.exp(x))  # noqa: E731
        ratio = odds(c) - odds(r)
        loss = -c + lam * mpmath.log1p(mpmath.exp(-ratio))
        d_rejected = lam * (1 - 1 / (1 + mpmath.exp(-ratio))) / (1 - mpmath.exp(r))  # λ σ(-ratio) · d log odds(r)/dr
        return float(loss), float(d_rejected)


@pytest.mark.parametrize("c, r", [(-1e-8, -1e-7), (-1e-7, -3e-7), (-3e-7, -1e-8), (-1e-8, -3e-7)])
def test_orpo_is_exact_near_certainty(c, r):
    """Both responses above the old clamp (-1e-6): the loss was constant (ratio 0) and the rejected
    gradient zero; TRL's ORPO has the exact odds, e.g. log odds(-1e-8) = 18.42, log odds(-1e-7) = 16.12."""
    assert math.isclose(math.log(-math.expm1(-1e-8)), -18.420680748952364, rel_tol=1e-12)  # plain float64 cross-check
    chosen = torch.tensor([c], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([r], dtype=torch.float64, requires_grad=True)
    loss = orpo_loss(chosen, rejected, 0.1)
    loss.sum().backward()
    want, want_grad = _orpo_reference(c, r, 0.1)
    assert math.isclose(loss.item(), want, rel_tol=1e-12)
    assert rejected.grad.item() != 0 and math.isclose(rejected.grad.item(), want_grad, rel_tol=1e-9)
    # float32, as the policy scores arrive in training: still ordered and finite, not collapsed to a tie
    lo32 = orpo_loss(torch.tensor([c]), torch.tensor([r]), 0.1)
    assert math.isclose(lo32.item(), want, rel_tol=1e-4)


def test_orpo_agrees_with_the_clamped_form_in_the_ordinary_range():
    """Away from certainty the exact log1mexp and the former log(-expm1(clamp(lp, max=-1e-6))) agree."""
    def old_log_odds(lp):
        lp = lp.clamp(max=-1e-6)
        return lp - torch.log(-torch.expm1(lp))

    for dtype in (torch.float32, torch.float64):
        c = torch.tensor([-0.5, -2.0, -0.01, -30.0], dtype=dtype)
        r = torch.tensor([-2.0, -0.5, -3.0, -0.7], dtype=dtype)
        old = -c - 0.1 * torch.nn.functional.logsigmoid(old_log_odds(c) - old_log_odds(r))
        assert torch.allclose(orpo_loss(c, r, 0.1), old, rtol=1e-6, atol=0)
        for (ci, ri) in zip(c.tolist(), r.tolist()):
            assert math.isclose(orpo_loss(torch.tensor([ci], dtype=torch.float64), torch.tensor([ri], dtype=torch.float64), 0.1).item(),
                                _orpo_reference(ci, ri, 0.1)[0], rel_tol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orpo_finite_up_to_certainty(dtype):
    """Loss and gradients stay finite for every mean log-prob strictly below 0, down to the smallest
    normal number; at exactly 0 (P = 1, log odds +inf) and above it the value is that of -tiny, with no gradient through the odds."""
    tiny = torch.finfo(dtype).tiny
    lp = torch.tensor([-tiny, -1e-30, -1e-12, 0.0, -tiny / 4], dtype=dtype, requires_grad=True)
    other = torch.full_like(lp, -1.0, requires_grad=True)
    loss = orpo_loss(lp, other, 0.1) + orpo_loss(other, lp, 0.1)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(lp.grad).all() and torch.isfinite(other.grad).all()
    assert (other.grad != 0).all()
    ordered = log_odds(lp.detach()[:3])
    assert (ordered[0] > ordered[1]) and (ordered[1] > ordered[2])  # closer to certainty = larger odds
    assert log_odds(torch.tensor([0.0], dtype=dtype)).item() == log_odds(torch.tensor([-tiny], dtype=dtype)).item()


# ---- aggregators ---------------------------------------------------------------------------------


def test_dr_dpo_hand_derived():
    """ℓ = [0, log 3], β' = 1: mean exp(-ℓ) = (1 + 1/3)/2 = 2/3 → L = -log(2/3) = 0.4054651;
    weights softmax(-ℓ) = [1, 1/3]/(4/3) = [0.75, 0.25]."""
    value, w = dr_dpo_loss(torch.tensor([0.0, math.log(3.0)]), 1.0)
    assert math.isclose(value.item(), 0.4054651, rel_tol=1e-6)
    assert torch.allclose(w, torch.tensor([0.75, 0.25]))


def test_dr_dpo_gradient_is_the_weighted_per_sample_gradient():
    """∂L/∂ℓ_i = softmax_i(-ℓ/β'): high-loss pairs get small weight."""
    loss = torch.tensor([0.2, 1.0, 3.0], requires_grad=True)
    value, w = dr_dpo_loss(loss, 0.5)
    value.backward()
    assert torch.allclose(loss.grad, w) and w[0] > w[1] > w[2]


def test_dr_dpo_tends_to_mean_dpo_as_beta_prime_grows_and_to_min_as_it_shrinks():
    loss = -torch.nn.functional.logsigmoid(0.1 * torch.tensor([3.0, -2.0, 0.5, 10.0]))
    big, _ = dr_dpo_loss(loss, 1e5)
    assert math.isclose(big.item(), loss.mean().item(), rel_tol=1e-4)
    small, _ = dr_dpo_loss(loss, 1e-3)
    assert math.isclose(small.item(), loss.min().item(), abs_tol=1e-2)


def test_aggregators_respect_the_kept_mask():
    loss, kept = torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1.0, 1.0, 0.0])
    assert mean_loss(loss, kept).item() == 1.5
    value, w = DrDPO(beta_prime=1.0, scope="local").reduce(loss, kept)
    ref, _ = dr_dpo_loss(loss[:2], 1.0)
    assert math.isclose(value.item(), ref.item(), rel_tol=1e-6) and w[2].item() == 0.0
    # global scope on one process is the local computation
    value_g, w_g = DrDPO(beta_prime=1.0, scope="global").reduce(loss, kept)
    assert torch.allclose(value_g, value) and torch.allclose(w_g, w)


def test_objective_aggregate_records_dr_weight_in_the_metrics():
    obj = DPO(aggregator=DrDPO())
    out = obj.from_scores(scores([-1.0, -2.0], [-3.0, -1.0], [-2.0, -2.0], [-2.0, -2.0]))
    loss = obj.aggregate(out)
    assert "dr_weight" in out.metrics and math.isclose(out.metrics["dr_weight"].sum().item(), 1.0, rel_tol=1e-6)
    assert torch.isfinite(loss)


# ---- properties --------------------------------------------------------------------------------


def test_swapping_chosen_and_rejected_mirrors_the_margin_for_every_reference_loss():
    """Swapping y_w and y_l negates h; for DPO ℓ(h) - ℓ(-h) = -βh; rewards swap."""
    pc, pr, rc, rr = [-1.2, -0.3], [-2.5, -4.0], [-1.5, -1.0], [-2.0, -2.2]
    a, b = scores(pc, pr, rc, rr), scores(pr, pc, rr, rc)
    assert torch.allclose(a.margin, -b.margin)
    obj = DPO(beta=0.3)
    oa, ob = obj.from_scores(a), obj.from_scores(b)
    assert torch.allclose(oa.loss - ob.loss, -0.3 * a.margin)
    assert torch.allclose(oa.metrics["margin"], -ob.metrics["margin"])
    assert torch.allclose(oa.metrics["reward_chosen"], ob.metrics["reward_rejected"])
    for cls in (ConservativeDPO, RobustDPO, IPO, Hinge):
        o = cls()
        assert torch.allclose(o.from_scores(a).metrics["margin"], -o.from_scores(b).metrics["margin"])


def test_rdpo_is_unbiased_under_flips_and_cdpo_is_not():
    """E over flips with rate ε of rDPO(observed h) = DPO(true h): exactly, and on synthetic seeded flips."""
    eps, beta = 0.2, 0.5
    h = torch.linspace(-6, 6, 25)
    dpo = -torch.nn.functional.logsigmoid(beta * h)
    exact = (1 - eps) * rdpo_loss(h, beta, eps) + eps * rdpo_loss(-h, beta, eps)
    assert torch.allclose(exact, dpo, atol=1e-6)
    biased = (1 - eps) * cdpo_loss(h, beta, eps) + eps * cdpo_loss(-h, beta, eps)
    assert not torch.allclose(biased, dpo, atol=1e-2)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    true_h = torch.randn(n, generator=g) * 3
    flipped = torch.rand(n, generator=g) < eps
    observed = torch.where(flipped, -true_h, true_h)
    mc = rdpo_loss(observed, beta, eps).mean().item()
    clean = (-torch.nn.functional.logsigmoid(beta * true_h)).mean().item()
    assert abs(mc - clean) < 0.01, (mc, clean)


@pytest.mark.parametrize("make", [DPO, ConservativeDPO, RobustDPO, IPO, Hinge, SimPO, ORPO])
def test_no_nan_or_inf_at_extreme_margins(make):
    big = torch.tensor([1e4, -1e4], requires_grad=True)
    s = PairScores(big, -big, torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0]), torch.zeros(2), torch.zeros(2))
    obj = make(aggregator=DrDPO(beta_prime=1e-3))
    out = obj.from_scores(s, training=True)
    total = obj.aggregate(out)
    total.backward()
    assert torch.isfinite(out.loss).all() and torch.isfinite(total) and torch.isfinite(big.grad).all()
    for key, v in out.metrics.items():
        assert torch.isfinite(v).all(), key


# ---- β-DPO ----------------------------------------------------------------------------------------


def random_batches(n_batches=6, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        pc, pr = -torch.rand(size, generator=g) * 5, -torch.rand(size, generator=g) * 5
        rc, rr = -torch.rand(size, generator=g) * 5, -torch.rand(size, generator=g) * 5
        yield PairScores(pc, pr, torch.ones(size), torch.ones(size), rc, rr)


def test_beta_dpo_with_alpha_zero_and_keep_one_is_dpo():
    dpo = DPO(beta=0.1)
    beta_dpo = DPO(beta=0.1, controller=BetaDPO(alpha=0.0, keep=1.0, seed=0))
    controller = beta_dpo.build_controller()
    for s in random_batches():
        a, b = dpo.from_scores(s, training=True), beta_dpo.from_scores(s, training=True, controller=controller)
        assert torch.allclose(a.loss, b.loss)
        assert torch.allclose(dpo.aggregate(a), beta_dpo.aggregate(b))
        assert torch.all(b.metrics["kept"] == 1) and torch.allclose(b.metrics["beta"], torch.full((8,), 0.1))


def test_beta_dpo_hand_derived_first_step():
    """Margins h = [1, 2, 3, 6], m = 0.9, statistics start at 0 and are updated before use:
    M_0 = 0.1·mean(h) = 0.1·3 = 0.3; σ = 0.1·std(h) = 0.1·2.1602469 = 0.2160247.
    ρ = 1 keeps all: β = 0.1·(1 + 0.5·(3 - 0.3)) = 0.1·2.35 = 0.235."""
    ctrl = BetaDPOController(beta0=0.1, alpha=0.5, momentum=0.9, keep_fraction=1.0, seed=0)
    step = ctrl.step(torch.tensor([1.0, 2.0, 3.0, 6.0]), training=True)
    assert math.isclose(step.threshold.item(), 0.3, rel_tol=1e-6)
    assert math.isclose(step.sigma.item(), 0.2160247, rel_tol=1e-5)
    assert math.isclose(step.beta.item(), 0.235, rel_tol=1e-5)


def test_beta_dpo_filter_keeps_floor_rho_n_and_prefers_pairs_near_the_threshold():
    assert keep_count(8, 0.8) == 6 and keep_count(10, 0.8) == 8 and keep_count(1, 0.5) == 1
    w = gaussian_filter_weights(torch.tensor([0.0, 1.0, 10.0]), torch.tensor(0.0), torch.tensor(1.0))
    assert w[0] > w[1] > w[2] > 0
    ctrl = BetaDPOController(0.1, 0.6, 0.0, 0.5, seed=0)  # momentum 0: M_0, σ = this batch's mean, std
    margins = torch.tensor([0.0, 0.1, -0.1, 0.05, 50.0, -50.0, 0.02, -0.03])
    counts = torch.zeros(8)
    for _ in range(50):
        step = ctrl.step(margins, training=True)
        assert step.kept.sum().item() == 4
        counts += step.kept
    assert counts[4] + counts[5] < counts[0]  # the two outliers are rarely kept


def test_beta_dpo_step_zero_zero_variance_is_finite():
    """At step 0 policy = reference, every h = 0 and σ = 0: uniform weights, β = β_0, no NaN."""
    ctrl = BetaDPOController(0.1, 0.6, 0.9, 0.8, seed=0)
    step = ctrl.step(torch.zeros(8), training=True)
    assert step.kept.sum().item() == 6 and math.isclose(step.beta.item(), 0.1, rel_tol=1e-6)
    assert torch.allclose(gaussian_filter_weights(torch.zeros(3), torch.tensor(0.0), torch.tensor(0.0)), torch.ones(3))


def test_beta_dpo_beta_is_clamped_and_detached():
    ctrl = BetaDPOController(0.1, 10.0, 0.0, 1.0, seed=0)
    ctrl.step(torch.tensor([100.0, 100.0]), training=True)  # M_0 = 100
    h = torch.tensor([-100.0, -100.0], requires_grad=True)
    step = ctrl.step(h, training=False)  # mean 200 below M_0: 1 + 10·(-200) < 0
    assert step.beta.item() == pytest.approx(1e-3) and not step.beta.requires_grad


def test_beta_dpo_evaluation_does_not_change_the_statistics_and_keeps_every_pair():
    obj = DPO(controller=BetaDPO(seed=0))
    ctrl = obj.build_controller()
    batches = list(random_batches())
    obj.from_scores(batches[0], training=True, controller=ctrl)
    before = {k: v.clone() for k, v in ctrl.state_dict().items()}
    out = obj.from_scores(batches[1], training=False, controller=ctrl)
    assert all(torch.equal(before[k], v) for k, v in ctrl.state_dict().items())
    assert torch.all(out.kept == 1)


def test_beta_dpo_state_travels_in_a_state_dict_and_resumes_identically():
    obj = DPO(controller=BetaDPO(seed=3))
    batches = list(random_batches(8))
    a = obj.build_controller()
    for s in batches[:4]:
        obj.from_scores(s, training=True, controller=a)
    b = obj.build_controller()
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {"threshold", "sigma", "updates"}
    for s in batches[4:]:
        oa, ob = obj.from_scores(s, training=True, controller=a), obj.from_scores(s, training=True, controller=b)
        assert torch.equal(oa.kept, ob.kept) and torch.equal(oa.metrics["beta_dpo_beta"], ob.metrics["beta_dpo_beta"])


def test_per_sample_dynamics_metrics_for_preferences():
    obj = DPO(controller=BetaDPO(seed=0), aggregator=DrDPO())
    out = obj.from_scores(next(random_batches()), training=True, controller=obj.build_controller())
    obj.aggregate(out)
    expected = {"logratio_chosen", "logratio_rejected", "margin", "beta", "beta_dpo_beta", "dr_weight", "kept", "beta_dpo_threshold",
                "beta_dpo_sigma", "reward_margin", "pref_acc", "confidence"}
    assert expected <= set(out.metrics)
    assert all(v.shape == (8,) for v in out.metrics.values())
    assert out.metrics["dr_weight"][out.kept == 0].eq(0).all()


def test_beta_dpo_records_rewards_and_confidence_with_beta0_and_the_batch_beta_apart():
    """Pairs with log-ratios ρ_w = h = [1, 2, 3, 6], ρ_l = 0; β_0 = 0.1, α = 0.5, m = 0.9, ρ = 1.
    The controller's first step gives β_batch = 0.235 (hand-derived above); the loss uses it:
    ℓ_1 = -log σ(0.235·1) = log(1 + e^-0.235) = 0.582534. The records use β_0:
    r_w = 0.1·h = [0.1, 0.2, 0.3, 0.6], r_l = 0, confidence = σ(0.1·h) = [0.524979, 0.549834, 0.574443, 0.645656].
    Pair 1 in a second batch next to other pairs gets another β_batch but the same records."""
    obj = DPO(beta=0.1, controller=BetaDPO(alpha=0.5, momentum=0.9, keep=1.0, seed=0))
    ctrl = obj.build_controller()
    h = torch.tensor([1.0, 2.0, 3.0, 6.0])
    zero, ones = torch.zeros(4), torch.ones(4)
    out = obj.from_scores(PairScores(h - 5.0, zero - 5.0, ones, ones, zero - 5.0, zero - 5.0), training=True, controller=ctrl)
    assert torch.allclose(out.metrics["beta_dpo_beta"], torch.full((4,), 0.235), rtol=1e-5)
    assert math.isclose(out.loss[0].item(), 0.582534, rel_tol=1e-5)
    assert torch.allclose(out.metrics["beta"], torch.full((4,), 0.1))
    assert torch.allclose(out.metrics["reward_chosen"], torch.tensor([0.1, 0.2, 0.3, 0.6]), atol=1e-6)
    assert torch.allclose(out.metrics["reward_rejected"], zero, atol=1e-6)
    assert torch.allclose(out.metrics["confidence"], torch.tensor([0.524979, 0.549834, 0.574443, 0.645656]), atol=1e-6)
    # the same pair 1 in another batch: a different batch β, identical per-pair records
    h2 = torch.tensor([1.0, -40.0, -40.0, -40.0])
    again = obj.from_scores(PairScores(h2, zero, ones, ones, zero, zero), training=True, controller=ctrl)
    assert not math.isclose(again.metrics["beta_dpo_beta"][0].item(), 0.235, rel_tol=1e-3)
    for key in ("reward_chosen", "reward_rejected", "reward_margin", "confidence", "beta"):
        assert math.isclose(again.metrics[key][0].item(), out.metrics[key][0].item(), rel_tol=1e-6), key


# ---- bad input: one line naming field, value and what is allowed ---------------------------------

PREF = ["objective=dpo", "data.format=preference"]
BAD = {
    "beta <= 0": ([*PREF, "objective.beta=0"], "objective.beta=0.0", "> 0"),
    "negative beta (cdpo)": (["objective=cdpo", "data.format=preference", "objective.beta=-1"], "objective.beta=-1.0", "> 0"),
    "beta' <= 0": ([*PREF, "objective/aggregator=dr_dpo", "objective.aggregator.beta_prime=0"], "objective.aggregator.beta_prime=0.0", "> 0"),
    "epsilon >= 0.5": (["objective=rdpo", "data.format=preference", "objective.epsilon=0.5"], "objective.epsilon=0.5", "[0, 0.5)"),
    "epsilon < 0": (["objective=cdpo", "data.format=preference", "objective.epsilon=-0.1"], "objective.epsilon=-0.1", "[0, 0.5)"),
    "rho > 1": ([*PREF, "objective/controller=beta_dpo", "objective.controller.keep=1.5"], "objective.controller.keep=1.5", "(0, 1]"),
    "rho = 0": ([*PREF, "objective/controller=beta_dpo", "objective.controller.keep=0"], "objective.controller.keep=0.0", "(0, 1]"),
    "momentum = 1": ([*PREF, "objective/controller=beta_dpo", "objective.controller.momentum=1"], "objective.controller.momentum=1.0", "[0, 1)"),
    "unknown aggregator": ([*PREF, "objective/aggregator=max"], "objective/aggregator='max'", "dr_dpo"),
    "unknown scope": ([*PREF, "objective/aggregator=dr_dpo", "objective.aggregator.scope=world"], "objective.aggregator.scope='world'", "global"),
    "controller on a reference-free loss": (["objective=simpo", "data.format=preference", "objective/controller=beta_dpo"], "objective/controller='beta_dpo'", "reference-based"),
    "aggregator given as a value": ([*PREF, "objective.aggregator=dr_dpo"], "objective.aggregator='dr_dpo'", "objective/aggregator="),
    "controller given as a value": ([*PREF, "objective.controller=beta_dpo"], "objective.controller='beta_dpo'", "objective/controller="),
    "method set by hand": ([*PREF, "objective.method=mine"], "objective.method='mine'", "objective/aggregator"),
    "curry gaps on sft data": (["data.rating_gaps=[3]"], "data.rating_gaps=[3.0]", "data.format=preference"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_objective_input_is_one_line(compose_cfg, name):
    from assay.config import validate

    overrides, field_value, allowed = BAD[name]
    with pytest.raises(Exception) as err:  # an unknown option fails at compose, the rest at validation
        validate(compose_cfg(overrides))
    line = explain(err.value)
    assert "\n" not in line and field_value in line and allowed in line, line


def test_controller_on_sft_is_one_line_naming_the_group(compose_cfg):
    from assay.config import validate

    with pytest.raises(UserError) as err:
        validate(compose_cfg(["objective/controller=beta_dpo"]))
    line = explain(err.value)
    assert "\n" not in line and "objective/controller" in line and "objective=sft" in line, line


@pytest.mark.parametrize(
    "overrides,key",
    [(["objective.aggregator.beta_prime=0.5"], "objective.aggregator.beta_prime"),  # the mean has no β'
     (["objective.aggregator.scope=global"], "objective.aggregator.scope"),
     ([*PREF, "objective.controller.alpha=0.5"], "objective.controller.alpha"),  # a fixed β has no α
     ([*PREF, "objective/aggregator=dr_dpo", "objective.controller.keep=0.5"], "objective.controller.keep"),
     ([*PREF, "objective.dr_beta_prime=0.5"], "objective.dr_beta_prime"),  # the flat spellings are gone
     ([*PREF, "objective.beta_dpo_keep=0.5"], "objective.beta_dpo_keep")],
)
def test_a_field_of_an_entry_not_chosen_cannot_be_set(compose_cfg, overrides, key):
    with pytest.raises(Exception) as err:
        compose_cfg(overrides)
    line = explain(err.value)
    assert "\n" not in line and key in line and "unknown key" in line, line


# ---- spellings: the presets objective=dr_dpo / beta_dpo are DPO plus one entry ------------------

SPELLINGS = [
    (["objective=dr_dpo"], [*PREF[:1], "objective/aggregator=dr_dpo"], "dpo+dr_dpo"),
    (["objective=beta_dpo"], [*PREF[:1], "objective/controller=beta_dpo"], "dpo+beta_dpo"),
    (["objective=dr_dpo", "objective.aggregator.beta_prime=0.5", "objective/controller=beta_dpo", "objective.controller.alpha=0.3"],
     ["objective=beta_dpo", "objective/aggregator=dr_dpo", "objective.aggregator.beta_prime=0.5", "objective.controller.alpha=0.3"], "dpo+dr_dpo+beta_dpo"),
    (["objective=dr_dpo", "objective/aggregator=mean"], ["objective=dpo"], "dpo"),
]


@pytest.mark.parametrize("old,new,method", SPELLINGS)
def test_old_and_new_spellings_compose_to_the_same_config(compose_cfg, old, new, method):
    from omegaconf import OmegaConf

    from assay.config import validate

    a = compose_cfg([*old, "data.format=preference"])
    b = compose_cfg([*new, "data.format=preference"])
    assert OmegaConf.to_container(a.objective, resolve=True) == OmegaConf.to_container(b.objective, resolve=True)
    assert OmegaConf.to_yaml(a.objective) == OmegaConf.to_yaml(b.objective)  # unresolved too
    spec = validate(a)
    assert spec.objective.name == "dpo" and spec.objective.method == method == a.objective.method


def test_method_labels_and_capabilities_come_from_the_entries():
    assert DPO().method == "dpo" and isinstance(DPO().aggregator, Mean) and isinstance(DPO().controller, NoController)
    assert DPO(aggregator=DrDPO(), controller=BetaDPO(seed=0)).method == "dpo+dr_dpo+beta_dpo"
    assert not Mean().gathers_across_ranks and not DrDPO().gathers_across_ranks and DrDPO(scope="global").gathers_across_ranks
    assert DPO(aggregator=DrDPO(scope="global")).gathers_across_ranks
    assert NoController().build(DPO()) is None and DPO().build_controller() is None
    ctrl = BetaDPO(alpha=0.5, momentum=0.8, keep=0.7, seed=4).build(DPO(beta=0.2))
    assert (ctrl.beta0, ctrl.alpha, ctrl.momentum, ctrl.keep_fraction, ctrl.seed) == (0.2, 0.5, 0.8, 0.7, 4)
    assert set(ctrl.state_dict()) == {"threshold", "sigma", "updates"}  # the checkpoint keys resume reads
    value, weights = Mean().reduce(torch.tensor([1.0, 3.0]))
    assert value.item() == 2.0 and weights is None
    with pytest.raises(UserError, match="objective/controller"):
        SimPO(controller=BetaDPO(seed=0))


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    "bad_row,fragment",
    [({"prompt": "p", "chosen": "", "rejected": "b"}, "data.chosen"),
     ({"prompt": "p", "chosen": "a", "rejected": "  "}, "data.rejected"),
     ({"prompt": "p", "chosen": "same", "rejected": "same"}, "identical chosen and rejected")],
)
def test_bad_preference_rows_are_one_line(compose_cfg, tmp_path, bad_row, fragment):
    from assay.config import validate
    from assay.data import build_examples

    rows = [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(40)] + [bad_row]
    path = _jsonl(tmp_path / "train.jsonl", rows)
    spec = validate(compose_cfg(["data=jsonl", f"data.train_file={path}", "data.format=preference", "objective=dpo"]))
    with pytest.raises(UserError) as err:
        build_examples(spec.data, spec.mixture, spec.noise)
    assert "\n" not in str(err.value) and fragment in str(err.value), str(err.value)


# ---- Curry-DPO pairs ---------------------------------------------------------------------------


def test_curry_pairs_expand_top_vs_each_other_ordered_easy_to_hard():
    from assay.data.sources import SkillsData, rating_gap_pairs

    rows = [{"id": "p0", "responses": ["a", "n", "f", "g"], "ratings": [3.0, 2.0, 1.0, 0.0]},
            {"id": "p1", "responses": ["b", "m", "e", "h"], "ratings": [3.0, 2.0, 1.0, 0.0]}]
    pairs = rating_gap_pairs(rows, [1, 2, 3])
    assert [p["id"] for p in pairs] == ["p0/vs3", "p1/vs3", "p0/vs2", "p1/vs2", "p0/vs1", "p1/vs1"]
    assert [p["rating_gap"] for p in pairs] == [3.0, 3.0, 2.0, 2.0, 1.0, 1.0]
    assert all(p["chosen"] in ("a", "b") for p in pairs) and pairs[0]["rejected"] == "g"
    assert [p["id"] for p in rating_gap_pairs(rows, [2])] == ["p0/vs2", "p1/vs2"]

    small = dict(domains=["copy", "add"], train_per_domain=10, val_per_domain=3, test_per_domain=3, seed=0, format="preference")
    plain = SkillsData(**small).load()
    curry = SkillsData(**small, rating_gaps=[3, 2, 1]).load()
    assert len(curry["train"]) <= 3 * len(plain["train"]) and len(curry["train"]) >= 2 * len(plain["train"])
    assert len(set(curry["train"]["id"])) == len(curry["train"])
    assert curry["val"]["id"] == plain["val"]["id"] and curry["val"]["rejected"] == plain["val"]["rejected"]
    gaps = curry["train"]["rating_gap"]
    assert gaps == sorted(gaps, reverse=True)


@pytest.mark.parametrize("schedule", ["constant", "constant_with_warmup", "linear", "cosine"])
def test_lr_schedules_match_transformers(schedule):
    from transformers import get_scheduler

    from assay.module import lr_multiplier

    for warmup, total in ((0, 10), (3, 10), (5, 5), (4, 1)):
        ours = [lr_multiplier(schedule, warmup, total)(t) for t in range(total + 3)]
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = get_scheduler(schedule, opt, num_warmup_steps=warmup, num_training_steps=total)
        theirs = [sched.lr_lambdas[0](t) for t in range(total + 3)]
        assert ours == pytest.approx(theirs, abs=1e-12), (schedule, warmup, total)


def test_sft_records_confidence_token_accuracy_and_correctness_hand_derived():
    """Two rows, prompt [1], responses [2, 3] and [2, 1]; the model's next-token probabilities are
    p0 = (.1, .1, .7, .1) after the prompt and p1 = (.1, .1, .2, .6) after token 2, in both rows.
    Row a: gold probs .7, .6 -> confidence .65, both tokens top-1 -> token_acc 1, correct 1,
    loss -(ln .7 + ln .6)/2 = 0.43375. Row b: gold probs .7, .1 -> confidence .4, token 1 is not the
    top-1 (3 is) -> token_acc .5, correct 0, loss -(ln .7 + ln .1)/2 = 1.32963."""
    from types import SimpleNamespace

    from assay.data.collate import IGNORE
    from assay.objectives.losses.sft import SFT

    p0, p1, pad = [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.2, 0.6], [0.25] * 4

    class FixedModel(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, use_cache=False):
            return SimpleNamespace(logits=torch.tensor([p0, p1, pad, pad]).log().expand(len(input_ids), 4, 4))

    batch = {
        "input_ids": torch.tensor([[1, 2, 3, 0], [1, 2, 1, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]]),
        "labels": torch.tensor([[IGNORE, 2, 3, IGNORE], [IGNORE, 2, 1, IGNORE]]),
    }
    out = SFT(pack_factor=0).compute(FixedModel(), batch)  # one row per example: the fixed logits are per position
    assert torch.allclose(out.loss, torch.tensor([0.43375, 1.32963]), atol=1e-5)
    assert torch.allclose(out.metrics["confidence"], torch.tensor([0.65, 0.4]))
    assert out.metrics["token_acc"].tolist() == [1.0, 0.5]
    assert out.metrics["correct"].tolist() == [1.0, 0.0]
