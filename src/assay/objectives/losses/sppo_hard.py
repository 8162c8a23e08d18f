"""SPPO with hard labels (Wu et al. 2024, Self-Play Preference Optimization, arXiv 2405.00675).

SPPO regresses each response's log-ratio ρ = lp - lp_ref onto η·(P(y wins) - ½) (Algorithm 1,
Eq. 4.7 as TRL cites it). With the winning probability set to 1 for the chosen response and 0 for
the rejected one (TRL's ``sppo_hard``: no preference model estimating P), and η = 1/β:

    ℓ = (ρ_w - 1/(2β))² + (ρ_l + 1/(2β))²
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import torch

from assay.cards import MethodCard
from assay.objectives.preference import PRECOMPUTED_REFERENCE, SHARED_PROMPT, TRL_PARITY, Beta, PairScores, ReferenceObjective, trl_code
from assay.registry import register


def sppo_hard_loss(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: Beta) -> torch.Tensor:
    """(ρ_w - 1/(2β))² + (ρ_l + 1/(2β))²: each log-ratio regressed onto ±η/2, η = 1/β."""
    return (chosen_ratio - 0.5 / beta) ** 2 + (rejected_ratio + 0.5 / beta) ** 2


@register("objective", "sppo_hard")
@dataclass
class SPPOHard(ReferenceObjective):
    """SPPO with hard win probabilities (Wu et al. 2024, arXiv 2405.00675, Eq. 4.7 with P ∈ {0, 1}).

    ℓ = (ρ_w - 1/(2β))² + (ρ_l + 1/(2β))². Symbols → fields: η = 1/β, β → ``beta``.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Wu et al. 2024, Self-Play Preference Optimization for Language Model Alignment",
        arxiv="2405.00675",
        code=trl_code("sppo_hard"),
        defaults={"beta": "0.1 (TRL's beta default, η = 1/β = 10; the paper's η was not checked): follows TRL"},
        deviations=(
            "Hard probabilities: P = 1 for the chosen response and 0 for the rejected one, where the paper estimates P with a "
            "preference model (PairRM) over several sampled responses, outside the trainer (TRL's sppo_hard).",
            "One round on fixed pairs: the paper's self-play iterations (new samples from the current policy each round) are "
            "not part of the loss.",
            PRECOMPUTED_REFERENCE,
            SHARED_PROMPT,
        ),
        checked=TRL_PARITY,
    )

    name: str = "sppo_hard"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return sppo_hard_loss(s.chosen_ratio, s.rejected_ratio, beta)
