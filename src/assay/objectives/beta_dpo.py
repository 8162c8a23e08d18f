"""β-DPO (Wu et al., NeurIPS 2024, arXiv 2407.08639): batch-level dynamic β and β-guided filtering.

With M_i the implicit-reward gap of pair i (the unscaled log-ratio margin h_i, as in the authors'
code ``junkangwu/beta-DPO``; the paper's Eq. for M_i may carry β_0, which is unverified):

    M_0 ← m·M_0 + (1-m)·mean_batch(M_i)        σ ← m·σ + (1-m)·std_batch(M_i)       (moving averages)
    p(M_i) ∝ exp(-(M_i - M_0)² / (2σ²))          keep ⌊ρ·N⌋ pairs drawn without replacement by p
    β_batch = β_0 · [1 + α·(mean_kept(M_i) - M_0)]                                    (clamped ≥ 1e-3, detached)

As in the reference code, the statistics start at 0 without bias correction, are updated before
the loss (so M_0 already includes the current batch) and are computed over the batch gathered from
every rank. With gradient accumulation the batch is the whole optimizer batch, as in the paper (64
pairs): the margins of every micro-batch of the step are computed first (no gradient, the same
weights the step's micro-batches train with, so the same margins) and one update serves them all. Deliberate differences: evaluation reads the statistics without updating them (the
reference code lets eval batches move them; TRL PR #5667 made the same choice as here), σ has an
epsilon and a zero-variance batch (step 0, policy = reference, every h = 0) falls back to uniform
weights instead of NaN, and the sampling generator is seeded by (seed, update count) so every rank
draws the same mask and a resumed run draws what the uninterrupted run would have.

β_batch scales the loss only. The per-pair records (reward_chosen/rejected/margin, confidence) are
scaled by β_0, so one pair's records compare across batches whatever pairs it shared a batch with;
β_batch is recorded in its own column, ``beta_dpo_beta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from assay.objectives.aggregators import gather_across_ranks

BETA_MIN = 1e-3
"""Lower clamp of β_batch, from the reference code (a negative β would reverse the preference)."""
SIGMA_EPS = 1e-6
"""Below this moving-average σ the Gaussian weights are undefined; weights become uniform."""


@dataclass
class BetaStep:
    beta: torch.Tensor
    """Scalar β used for this batch (detached)."""
    kept: torch.Tensor
    """[B] 1.0 for pairs kept by the filter (this rank's slice)."""
    threshold: torch.Tensor
    """Scalar M_0 after this batch's update."""
    sigma: torch.Tensor
    """Scalar moving-average σ after this batch's update."""


def gaussian_filter_weights(margin: torch.Tensor, threshold: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """p(M_i) ∝ exp(-½((M_i - M_0)/σ)²); uniform when σ is (near) zero or the weights are not finite."""
    if not torch.isfinite(sigma) or float(sigma) < SIGMA_EPS:
        return torch.ones_like(margin)
    w = torch.exp(-0.5 * ((margin - threshold) / (sigma + SIGMA_EPS)) ** 2)
    if not torch.isfinite(w).all() or float(w.sum()) <= 0:
        return torch.ones_like(margin)
    # Outliers underflow to 0; a tiny floor keeps sampling without replacement possible for any k.
    return w.clamp(min=1e-30)


def keep_count(n: int, keep_fraction: float) -> int:
    """⌊ρ·N⌋, at least 1 (the reference code's int(N·(1 - mode_weight)))."""
    return max(1, min(n, int(n * keep_fraction + 1e-9)))


def dynamic_beta(beta0: float, alpha: float, kept_margin_mean: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """β_batch = β_0·[1 + α·(mean_kept(M) - M_0)], clamped at 1e-3 and detached."""
    return (beta0 * (1.0 + alpha * (kept_margin_mean - threshold))).clamp(min=BETA_MIN).detach()


class BetaDPOController(torch.nn.Module):
    """The running statistics of β-DPO, as buffers (so they are saved in every checkpoint)."""

    def __init__(self, beta0: float, alpha: float, momentum: float, keep_fraction: float, seed: int):
        super().__init__()
        self.beta0, self.alpha, self.momentum, self.keep_fraction, self.seed = beta0, alpha, momentum, keep_fraction, int(seed)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("sigma", torch.zeros(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self._planned: list[BetaStep] = []

    @torch.no_grad()
    def plan(self, margins: list[torch.Tensor]) -> None:
        """One update from the margins of every micro-batch of an optimizer step (gradient
        accumulation; every rank's are gathered in ``step``): the paper's batch statistics are those
        of the optimizer batch. The micro-batches' training steps then take their share in order."""
        sizes = [m.shape[0] for m in margins]
        whole = self.step(torch.cat([m.detach().float() for m in margins]), training=True)
        kept = torch.split(whole.kept, sizes)
        self._planned = [BetaStep(whole.beta, k, whole.threshold, whole.sigma) for k in kept]

    @torch.no_grad()
    def step(self, margin: torch.Tensor, training: bool) -> BetaStep:
        """β and the kept mask for a batch of margins h (any shape [B]); updates the statistics only when training."""
        if training and self._planned:
            planned = self._planned.pop(0)
            if planned.kept.shape[0] != margin.shape[0]:
                raise RuntimeError(f"β-DPO planned a micro-batch of {planned.kept.shape[0]} pairs, got {margin.shape[0]}")
            return planned
        everyone, mine = gather_across_ranks(margin.detach().float(), differentiable=False, fill=float("nan"))
        if training:
            m = self.momentum
            std = everyone.std() if everyone.numel() > 1 else everyone.new_zeros(())
            self.threshold.mul_(m).add_((1 - m) * everyone.mean())
            self.sigma.mul_(m).add_((1 - m) * std)
            self.updates.add_(1)
        kept = torch.ones_like(everyone)
        if training and self.keep_fraction < 1.0:
            weights = gaussian_filter_weights(everyone, self.threshold, self.sigma)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.updates))
            chosen = torch.multinomial(weights.cpu(), keep_count(everyone.numel(), self.keep_fraction), replacement=False, generator=generator)
            kept = torch.zeros_like(everyone)
            kept[chosen.to(kept.device)] = 1.0
        kept_mean = (everyone * kept).sum() / kept.sum()
        beta = dynamic_beta(self.beta0, self.alpha, kept_mean, self.threshold)
        return BetaStep(beta=beta, kept=kept[mine], threshold=self.threshold.clone(), sigma=self.sigma.clone())
