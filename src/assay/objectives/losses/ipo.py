"""Identity Preference Optimisation (Azar et al., AISTATS 2024, arXiv 2310.12036)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import torch

from assay.cards import MethodCard
from assay.objectives.preference import TRL_PARITY, Beta, PairScores, ReferenceObjective
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

    card: ClassVar[MethodCard] = MethodCard(
        paper="Azar et al. 2024, A General Theoretical Paradigm to Understand Learning from Human Preferences (AISTATS 2024)",
        arxiv="2310.12036",
        code="huggingface/trl v1.16.0: trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss, loss_type='ipo', length-averaged "
             "since PR #1265)",
        defaults={"beta": "0.1 as τ (TRL's beta default; the paper gives no value for LLM training): follows TRL"},
        deviations=(
            "Log-ratios are averaged over completion tokens: TRL's choice ('confirmed with the IPO authors', TRL #1677), not "
            "the paper's own normalisation (research note).",
            "Token counts are clamped at 1, so a truncated completion cannot divide by zero (TRL #1033).",
            "Reference log-probs are precomputed once before training (TRL's precompute_ref_log_probs) instead of a live "
            "reference forward pass: the same values for a frozen reference.",
        ),
        checked="tests/unit/objectives/test_objectives.py: hand-derived value with the length-averaged margin; " + TRL_PARITY,
    )

    name: str = "ipo"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return ipo_loss(s.mean_margin, beta)
