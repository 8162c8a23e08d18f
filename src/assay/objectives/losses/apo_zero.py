"""APO-zero: anchored preference optimisation (D'Oosterlinck et al. 2024, arXiv 2408.06266, Eq. 7).

For data whose chosen responses are better than the model's own: the chosen reward r_w = β·ρ_w is
pushed up and the rejected reward r_l pushed down, each anchored at 0 (the reference), rather than
only their difference:

    ℓ = (1 - σ(r_w)) + σ(r_l)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import torch

from assay.cards import MethodCard
from assay.objectives.preference import PRECOMPUTED_REFERENCE, SHARED_PROMPT, TRL_PARITY, Beta, PairScores, ReferenceObjective, trl_code
from assay.registry import register

APO_PAPER = "D'Oosterlinck et al. 2024, Anchored Preference Optimization and Contrastive Revisions: Addressing Underspecification in Alignment"


def apo_zero_loss(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: Beta) -> torch.Tensor:
    """(1 - σ(βρ_w)) + σ(βρ_l)."""
    return (1 - torch.sigmoid(beta * chosen_ratio)) + torch.sigmoid(beta * rejected_ratio)


@register("objective", "apo_zero")
@dataclass
class APOZero(ReferenceObjective):
    """APO-zero: raise the chosen likelihood, lower the rejected, each against the reference (arXiv 2408.06266, Eq. 7).

    ℓ = (1 - σ(βρ_w)) + σ(βρ_l). Symbols → fields: β → ``beta``. For chosen responses better than the model's own outputs.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper=APO_PAPER,
        arxiv="2408.06266",
        code=trl_code("apo_zero"),
        defaults={"beta": "0.1 (TRL's beta default; the paper's value was not checked): follows TRL"},
        deviations=(PRECOMPUTED_REFERENCE, SHARED_PROMPT),
        checked=TRL_PARITY,
        notes="Bounded in [0, 2]; apo_down is the variant for chosen responses worse than the model's own.",
    )

    name: str = "apo_zero"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return apo_zero_loss(s.chosen_ratio, s.rejected_ratio, beta)
