"""Conservative DPO (cDPO): DPO with label smoothing (Mitchell 2023, ericmitchell.ai/cdpo.pdf).

Assumes each pair's label is flipped with probability ε. With z = β·h and the softplus identities
-log σ(z) = softplus(-z), -log σ(-z) = softplus(z) (finite at any |z|):

    ℓ = (1-ε)·softplus(-z) + ε·softplus(z)
"""

from __future__ import annotations

from dataclasses import dataclass

from assay.lazy import F, torch

from assay.objectives.preference import Beta, FlipRateObjective, PairScores
from assay.registry import register


def cdpo_loss(margin: torch.Tensor, beta: Beta, epsilon: float) -> torch.Tensor:
    """Mitchell (2023) cDPO note, Eq. 3: the DPO loss against soft labels (1-ε, ε)."""
    z = beta * margin
    return (1 - epsilon) * F.softplus(-z) + epsilon * F.softplus(z)


@register("objective", "cdpo")
@dataclass
class ConservativeDPO(FlipRateObjective):
    """cDPO: DPO with label smoothing ε (Mitchell 2023, ericmitchell.ai/cdpo.pdf, Eq. 3).

    ℓ = (1-ε)·(-log σ(βh)) + ε·(-log σ(-βh)). Symbols → fields: β → ``beta``, ε → ``epsilon``.
    Biased under flips (its minimiser is a finite margin), but bounded below by 0.
    """

    name: str = "cdpo"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return cdpo_loss(s.margin, beta, self.epsilon)
