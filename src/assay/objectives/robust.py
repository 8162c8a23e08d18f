"""Losses for noisy preference labels: conservative DPO (cDPO) and robust DPO (rDPO).

Both assume each pair's label is flipped with probability ε. With z = β·h and the softplus
identities -log σ(z) = softplus(-z), -log σ(-z) = softplus(z) (finite at any |z|):

    cDPO  ℓ = (1-ε)·softplus(-z) + ε·softplus(z)                    (label smoothing)
    rDPO  ℓ = [(1-ε)·softplus(-z) - ε·softplus(z)] / (1-2ε)         (unbiased under flips)
"""

from __future__ import annotations

from dataclasses import dataclass

from assay.lazy import F, torch

from assay.errors import check
from assay.objectives.preference import Beta, PairScores, ReferenceObjective
from assay.registry import register


def cdpo_loss(margin: torch.Tensor, beta: Beta, epsilon: float) -> torch.Tensor:
    """Mitchell (2023) cDPO note, Eq. 3: the DPO loss against soft labels (1-ε, ε)."""
    z = beta * margin
    return (1 - epsilon) * F.softplus(-z) + epsilon * F.softplus(z)


def rdpo_loss(margin: torch.Tensor, beta: Beta, epsilon: float) -> torch.Tensor:
    """Chowdhury, Kini & Natarajan (ICML 2024, arXiv 2403.00409), the robust loss ℓ̂ (equation number not checked): for a label observed through
    a flip with probability ε, E_flip[ℓ̂(observed pair)] = -log σ(β·h_true). Can be negative."""
    z = beta * margin
    return ((1 - epsilon) * F.softplus(-z) - epsilon * F.softplus(z)) / (1 - 2 * epsilon)


@dataclass
class _FlipRate(ReferenceObjective):
    epsilon: float = 0.1
    """ε: assumed probability that a pair's label is flipped, in [0, 0.5) (0.1: the value TRL's
    DPOConfig cites from the robust DPO paper)."""

    def __post_init__(self) -> None:
        check(0.0 <= self.epsilon < 0.5, "objective.epsilon", self.epsilon, "must be in [0, 0.5)")
        super().__post_init__()


@register("objective", "cdpo")
@dataclass
class ConservativeDPO(_FlipRate):
    """cDPO: DPO with label smoothing ε (Mitchell 2023, ericmitchell.ai/cdpo.pdf, Eq. 3).

    ℓ = (1-ε)·(-log σ(βh)) + ε·(-log σ(-βh)). Symbols → fields: β → ``beta``, ε → ``epsilon``.
    Biased under flips (its minimiser is a finite margin), but bounded below by 0.
    """

    name: str = "cdpo"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return cdpo_loss(s.margin, beta, self.epsilon)


@register("objective", "rdpo")
@dataclass
class RobustDPO(_FlipRate):
    """rDPO: robust DPO, unbiased under flip rate ε (Chowdhury et al., ICML 2024, arXiv 2403.00409; the robust loss ℓ̂, equation number not checked).

    ℓ = [(1-ε)·(-log σ(βh)) - ε·(-log σ(-βh))] / (1-2ε). Symbols → fields: β → ``beta``,
    ε → ``epsilon`` (TRL's ``loss_type="robust"`` with ``label_smoothing=ε``).
    """

    name: str = "rdpo"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return rdpo_loss(s.margin, beta, self.epsilon)
