"""Length-normalised DPO (Tülu 3, Lambert et al. 2024, arXiv 2411.15124, §5.1.2 Eq. 6; TRL's ``sigmoid_norm``).

The DPO loss on per-token log-ratios, so a long response does not win on its length:

    ℓ = -log σ(β·(ρ_w/|y_w| - ρ_l/|y_l|))

the length averaging SimPO (arXiv 2405.14734) introduced, kept against a reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.objectives.preference import PRECOMPUTED_REFERENCE, SHARED_PROMPT, TRL_PARITY, Beta, PairScores, ReferenceObjective, trl_code
from assay.registry import register


def sigmoid_norm_loss(mean_margin: torch.Tensor, beta: Beta) -> torch.Tensor:
    """-log σ(β·h̄), h̄ = ρ_w/|y_w| - ρ_l/|y_l|."""
    return -F.logsigmoid(beta * mean_margin)


@register("objective", "sigmoid_norm")
@dataclass
class SigmoidNorm(ReferenceObjective):
    """Length-normalised DPO: -log σ(β·(ρ_w/|y_w| - ρ_l/|y_l|)) (Tülu 3, arXiv 2411.15124, Eq. 6).

    Symbols → fields: β → ``beta``. Token counts are the response's scored tokens (≥ 1).
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Lambert et al. 2024, Tülu 3: Pushing Frontiers in Open Language Model Post-Training (§5.1.2, Eq. 6)",
        arxiv="2411.15124",
        code=trl_code("sigmoid_norm"),
        defaults={
            "beta": "0.1 (TRL's beta default); differs from Tülu 3's recipe, which uses β = 5 with length normalisation (as we "
                    "recall it, not checked): set objective.beta for that recipe",
        },
        deviations=(PRECOMPUTED_REFERENCE, SHARED_PROMPT),
        checked=TRL_PARITY,
        notes="Per-token log-ratios make β's scale differ from DPO's by about the response length: a larger β is usual.",
    )

    name: str = "sigmoid_norm"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return sigmoid_norm_loss(s.mean_margin, beta)
