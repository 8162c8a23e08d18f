"""Hinge (SLiC) preference loss (Zhao et al. 2023, SLiC-HF, arXiv 2305.10425)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import torch

from assay.cards import MethodCard
from assay.objectives.preference import TRL_PARITY, Beta, PairScores, ReferenceObjective
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

    card: ClassVar[MethodCard] = MethodCard(
        paper="Zhao et al. 2023, SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
        arxiv="2305.10425",
        code="huggingface/trl v1.16.0: trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss, loss_type='hinge': relu(1 − β·h)); "
             "SLiC-HF's own code was not checked",
        defaults={"beta": "0.1 (TRL's default; 1/β is SLiC's margin δ, whose paper value was not checked): follows TRL"},
        deviations=(
            "Applied to the reference log-ratio margin h, as TRL does. SLiC-HF's calibration loss, as we recall it, compares the "
            "policy's own log-likelihoods and adds a regularisation term, which is not included; neither was checked against "
            "the paper (equation number not checked).",
            "Reference log-probs are precomputed once before training (TRL's precompute_ref_log_probs) instead of a live "
            "reference forward pass: the same values for a frozen reference.",
        ),
        checked="tests/unit/objectives/test_objectives.py: hand-derived value; " + TRL_PARITY,
    )

    name: str = "hinge"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return hinge_loss(s.margin, beta)
