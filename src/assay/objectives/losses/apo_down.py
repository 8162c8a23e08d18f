"""APO-down: anchored preference optimisation (D'Oosterlinck et al. 2024, arXiv 2408.06266, Eq. 8).

For data whose chosen responses are worse than the model's own: both likelihoods go down, the
rejected one more. With r = β·ρ:

    ℓ = σ(r_w) + (1 - σ(r_w - r_l))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import torch

from assay.cards import MethodCard
from assay.objectives.losses.apo_zero import APO_PAPER
from assay.objectives.preference import PRECOMPUTED_REFERENCE, SHARED_PROMPT, TRL_PARITY, Beta, PairScores, ReferenceObjective, trl_code
from assay.registry import register


def apo_down_loss(chosen_ratio: torch.Tensor, margin: torch.Tensor, beta: Beta) -> torch.Tensor:
    """σ(βρ_w) + (1 - σ(β·h)), h = ρ_w - ρ_l."""
    return torch.sigmoid(beta * chosen_ratio) + (1 - torch.sigmoid(beta * margin))


@register("objective", "apo_down")
@dataclass
class APODown(ReferenceObjective):
    """APO-down: lower both likelihoods, the rejected one more (arXiv 2408.06266, Eq. 8).

    ℓ = σ(βρ_w) + (1 - σ(β(ρ_w - ρ_l))). Symbols → fields: β → ``beta``. For chosen responses worse than the model's own outputs.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper=APO_PAPER,
        arxiv="2408.06266",
        code=trl_code("apo_down"),
        defaults={"beta": "0.1 (TRL's beta default; the paper's value was not checked): follows TRL"},
        deviations=(PRECOMPUTED_REFERENCE, SHARED_PROMPT),
        checked=TRL_PARITY,
        notes="Bounded in [0, 2]; apo_zero is the variant for chosen responses better than the model's own.",
    )

    name: str = "apo_down"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return apo_down_loss(s.chosen_ratio, s.margin, beta)
