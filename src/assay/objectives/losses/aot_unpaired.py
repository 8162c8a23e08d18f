"""AOT, unpaired (Melnyk et al., NeurIPS 2024, arXiv 2406.05882): the chosen log-ratios dominate the rejected ones.

Over the batch, the chosen log-ratios ρ_w and the rejected log-ratios ρ_l are sorted apart, and with
Δ_(i) = ρ_w(i) - ρ_l(i) at rank i: ℓ_(i) = -(1-ε)·log σ(βΔ_(i)) - ε·log σ(-βΔ_(i)). The pairing of
the data is not used: only the two distributions (the paper's unpaired setting). Rank i's loss is
recorded on the pair whose chosen log-ratio has rank i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import torch

from assay.cards import MethodCard
from assay.objectives.losses.aot import AOT, AOT_CHECKED, AOT_DEVIATIONS, AOT_PAPER, sorted_gap_loss
from assay.objectives.preference import Beta, PairScores, trl_code
from assay.registry import register


@register("objective", "aot_unpaired")
@dataclass
class AOTUnpaired(AOT):
    """AOT, unpaired: sorted chosen log-ratios dominate sorted rejected log-ratios (Melnyk et al., NeurIPS 2024, arXiv 2406.05882).

    ℓ_(i) = -(1-ε)·log σ(β·(ρ_w(i) - ρ_l(i))) - ε·log σ(-β·(ρ_w(i) - ρ_l(i))), each sorted over the batch.
    Symbols → fields: β → ``beta``, ε → ``epsilon`` (TRL's ``label_smoothing``).
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper=AOT_PAPER,
        arxiv="2406.05882",
        code=trl_code("aot_unpaired"),
        defaults={
            "beta": "0.1 (TRL's beta default; the paper's value was not checked): follows TRL",
            "epsilon": "0 (TRL's label_smoothing default): follows TRL",
        },
        deviations=AOT_DEVIATIONS,
        checked=AOT_CHECKED,
        notes="Uses the chosen and rejected responses as two unpaired samples; the data still comes as pairs.",
    )

    name: str = "aot_unpaired"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return sorted_gap_loss(s.chosen_ratio, s.rejected_ratio, beta, self.epsilon)
