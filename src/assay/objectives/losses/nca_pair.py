"""NCA, the pairwise form (Chen et al., NeurIPS 2024, arXiv 2402.05369): noise-contrastive alignment.

With the implicit rewards r = β·ρ (ρ = lp - lp_ref), NCA scores each response on its own, not only
their difference: the chosen reward is pushed up and both are pushed down by half,

    ℓ = -log σ(r_w) - ½·log σ(-r_w) - ½·log σ(-r_l)

so the chosen likelihood does not fall with the rejected one (the paper's point against DPO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.objectives.preference import PRECOMPUTED_REFERENCE, SHARED_PROMPT, TRL_PARITY, Beta, PairScores, ReferenceObjective, trl_code
from assay.registry import register


def nca_pair_loss(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: Beta) -> torch.Tensor:
    """-log σ(βρ_w) - ½ log σ(-βρ_w) - ½ log σ(-βρ_l)."""
    r_w, r_l = beta * chosen_ratio, beta * rejected_ratio
    return -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)


@register("objective", "nca_pair")
@dataclass
class NCAPair(ReferenceObjective):
    """NCA for pairs: each reward against a noise baseline (Chen et al., NeurIPS 2024, arXiv 2402.05369).

    ℓ = -log σ(βρ_w) - ½·log σ(-βρ_w) - ½·log σ(-βρ_l). Symbols → fields: β → ``beta``.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Chen et al. 2024, Noise Contrastive Alignment of Language Models with Explicit Rewards (NeurIPS 2024)",
        arxiv="2402.05369",
        code=trl_code("nca_pair"),
        defaults={"beta": "0.1 (TRL's beta default; the paper's value for pairs was not checked): follows TRL"},
        deviations=(
            "The pairwise (K = 2, binary preference) form as TRL implements it; the paper's reward-weighted form over K > 2 "
            "responses is not implemented, and the PDF's equation number was not checked.",
            PRECOMPUTED_REFERENCE,
            SHARED_PROMPT,
        ),
        checked=TRL_PARITY,
    )

    name: str = "nca_pair"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return nca_pair_loss(s.chosen_ratio, s.rejected_ratio, beta)
