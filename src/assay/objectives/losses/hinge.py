"""Hinge (SLiC) preference loss (Zhao et al. 2023, SLiC-HF, arXiv 2305.10425)."""

from __future__ import annotations

from dataclasses import dataclass

from assay.lazy import torch

from assay.objectives.preference import Beta, PairScores, ReferenceObjective
from assay.registry import register


def hinge_loss(margin: torch.Tensor, beta: Beta) -> torch.Tensor:
    """ℓ = max(0, 1 - β·h): zero once the scaled margin exceeds 1 (TRL ``loss_type="hinge"``)."""
    return torch.relu(1.0 - beta * margin)


@register("objective", "hinge")
@dataclass
class Hinge(ReferenceObjective):
    """Hinge loss on the reference log-ratio margin (SLiC-HF, arXiv 2305.10425, the rank-calibration loss as TRL applies it to h; equation number not checked).

    ℓ = max(0, 1 - β·h). Symbols → fields: β → ``beta`` (1/β is the margin δ of SLiC's calibration loss).
    """

    name: str = "hinge"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return hinge_loss(s.margin, beta)
