"""Robust DPO (rDPO): unbiased under label flips (Chowdhury, Kini & Natarajan, ICML 2024, arXiv 2403.00409).

Assumes each pair's label is flipped with probability ε. With z = β·h and the softplus identities
-log σ(z) = softplus(-z), -log σ(-z) = softplus(z) (finite at any |z|):

    ℓ = [(1-ε)·softplus(-z) - ε·softplus(z)] / (1-2ε)
"""

from __future__ import annotations

from dataclasses import dataclass

from assay.lazy import F, torch

from assay.objectives.preference import Beta, FlipRateObjective, PairScores
from assay.registry import register


def rdpo_loss(margin: torch.Tensor, beta: Beta, epsilon: float) -> torch.Tensor:
    """Chowdhury, Kini & Natarajan (ICML 2024, arXiv 2403.00409), the robust loss ℓ̂ (equation number not checked): for a label observed through
    a flip with probability ε, E_flip[ℓ̂(observed pair)] = -log σ(β·h_true). Can be negative."""
    z = beta * margin
    return ((1 - epsilon) * F.softplus(-z) - epsilon * F.softplus(z)) / (1 - 2 * epsilon)


@register("objective", "rdpo")
@dataclass
class RobustDPO(FlipRateObjective):
    """rDPO: robust DPO, unbiased under flip rate ε (Chowdhury et al., ICML 2024, arXiv 2403.00409; the robust loss ℓ̂, equation number not checked).

    ℓ = [(1-ε)·(-log σ(βh)) - ε·(-log σ(-βh))] / (1-2ε). Symbols → fields: β → ``beta``,
    ε → ``epsilon`` (TRL's ``loss_type="robust"`` with ``label_smoothing=ε``).
    """

    name: str = "rdpo"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return rdpo_loss(s.margin, beta, self.epsilon)
