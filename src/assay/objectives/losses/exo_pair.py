"""EXO, the pairwise form: exact optimisation of the KL-regularised objective (Ji et al., ICML 2024, arXiv 2402.00856).

With z = β·h, q = σ(z) the policy's preference distribution over {y_w, y_l} and p = (1-ε, ε) the
label distribution smoothed by ε, the loss is KL(q ‖ p) (the paper's EXO-pref with K = 2, Eq. 16 as
TRL cites it):

    ℓ = σ(z)·(log σ(z) - log(1-ε)) + σ(-z)·(log σ(-z) - log ε)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.errors import check
from assay.objectives.preference import PRECOMPUTED_REFERENCE, SHARED_PROMPT, TRL_PARITY, Beta, PairScores, ReferenceObjective, trl_code
from assay.registry import register


def exo_pair_loss(margin: torch.Tensor, beta: Beta, epsilon: float) -> torch.Tensor:
    """KL(σ(βh), σ(-βh) ‖ 1-ε, ε): reverse KL from the smoothed labels to the policy's preference."""
    z = beta * margin
    return torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-epsilon)) + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(epsilon))


@register("objective", "exo_pair")
@dataclass
class EXOPair(ReferenceObjective):
    """EXO-pref, pairwise: KL(policy preference ‖ labels smoothed by ε) (Ji et al., ICML 2024, arXiv 2402.00856, Eq. 16).

    ℓ = σ(βh)·(log σ(βh) - log(1-ε)) + σ(-βh)·(log σ(-βh) - log ε). Symbols → fields: β → ``beta``,
    ε → ``epsilon`` (TRL's ``label_smoothing``, which must be > 0 here).
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Ji et al. 2024, Towards Efficient Exact Optimization of Language Model Alignment (ICML 2024)",
        arxiv="2402.00856",
        code=trl_code("exo_pair"),
        defaults={
            "beta": "0.1 (TRL's beta default): follows TRL",
            "epsilon": "1e-3 (TRL's DPOConfig: 'the EXO paper recommends a typical value of 1e-3'; TRL's own default 0 is refused "
                       "by its trainer for exo_pair): follows the paper as TRL cites it",
        },
        deviations=(
            "The formula is TRL's (Eq. 16 of the paper as TRL cites it, with one β for the policy and reward temperatures); the "
            "paper's PDF was not re-read.",
            PRECOMPUTED_REFERENCE,
            SHARED_PROMPT,
        ),
        checked=TRL_PARITY,
        notes="Minimised at a finite margin, σ(βh) = 1-ε; ε is label smoothing, not a flip rate.",
    )

    name: str = "exo_pair"
    epsilon: float = 1e-3
    """ε: label smoothing, in (0, 1) (the paper's recommended 1e-3, as TRL's DPOConfig cites it)."""

    def __post_init__(self) -> None:
        check(0.0 < self.epsilon < 1.0, "objective.epsilon", self.epsilon, "must be in (0, 1): EXO's log ε needs ε > 0 (the paper recommends 1e-3)")
        super().__post_init__()

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return exo_pair_loss(s.margin, beta, self.epsilon)
