"""Identity Preference Optimisation (Azar et al., AISTATS 2024, arXiv 2310.12036)."""

from __future__ import annotations

from dataclasses import dataclass

from assay.lazy import torch

from assay.objectives.preference import Beta, PairScores, ReferenceObjective
from assay.registry import register


def ipo_loss(mean_margin: torch.Tensor, tau: Beta) -> torch.Tensor:
    """Eq. 17: ℓ = (h̄ - 1/(2τ))², a squared loss that pulls the margin to a finite target instead
    of pushing it to infinity. h̄ is length-averaged (TRL's choice, confirmed with the authors, TRL #1677)."""
    return (mean_margin - 1.0 / (2.0 * tau)) ** 2


@register("objective", "ipo")
@dataclass
class IPO(ReferenceObjective):
    """IPO with length-averaged log-ratios (Azar et al. 2024, arXiv 2310.12036, Eq. 17).

    ℓ = (ρ_w/|y_w| - ρ_l/|y_l| - 1/(2τ))². Symbols → fields: τ → ``beta`` (as in TRL); token
    counts are clamped at 1 so a truncated completion cannot divide by zero (TRL #1033).
    """

    name: str = "ipo"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return ipo_loss(s.mean_margin, beta)
