"""Robust DPO (rDPO): unbiased under label flips (Chowdhury, Kini & Natarajan, ICML 2024, arXiv 2403.00409).

Assumes each pair's label is flipped with probability ε. With z = β·h and the softplus identities
-log σ(z) = softplus(-z), -log σ(-z) = softplus(z) (finite at any |z|):

    ℓ = [(1-ε)·softplus(-z) - ε·softplus(z)] / (1-2ε)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.objectives.preference import TRL_PARITY, Beta, FlipRateObjective, PairScores
from assay.registry import register


def rdpo_loss(margin: torch.Tensor, beta: Beta, epsilon: float) -> torch.Tensor:
    """Chowdhury, Kini & Natarajan (ICML 2024, arXiv 2403.00409), the robust loss ℓ̂ (equation number not checked): for a label observed through
    a flip with probability ε, E_flip[ℓ̂(observed pair)] = -log σ(β·h_true). Can be negative."""
    z = beta * margin
    return ((1 - epsilon) * F.softplus(-z) - epsilon * F.softplus(z)) / (1 - 2 * epsilon)


@register("objective", "rdpo")
@dataclass
class RobustDPO(FlipRateObjective):
    """rDPO: robust DPO, unbiased under flip rate ε (Chowdhury et al., ICML 2024, arXiv 2403.00409; the robust loss ℓ̂, equation number not checked).

    ℓ = [(1-ε)·(-log σ(βh)) - ε·(-log σ(-βh))] / (1-2ε). Symbols → fields: β → ``beta``,
    ε → ``epsilon`` (TRL's ``loss_type="robust"`` with ``label_smoothing=ε``).
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Chowdhury, Kini & Natarajan 2024, Provably Robust DPO: Aligning Language Models with Noisy Feedback (ICML 2024)",
        arxiv="2403.00409",
        code="huggingface/trl v1.16.0: trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss, loss_type='robust'); the authors' own "
             "code was not checked",
        defaults={
            "beta": "0.1 (the DPO default): follows DPO",
            "epsilon": "0.1 (TRL's DPOConfig: 'a typical value recommended by the Robust DPO paper'): follows TRL; the paper's own "
                       "tables were not checked",
        },
        deviations=(
            "The robust loss ℓ̂ is TRL's `robust` form; its equation number in the paper was not checked.",
            "Reference log-probs are precomputed once before training (TRL's precompute_ref_log_probs) instead of a live "
            "reference forward pass: the same values for a frozen reference.",
            "Each pair is one shared-prompt sequence by default (share_prompt=true, prefix sharing, arXiv 2410.20305): the "
            "same log-probs up to float rounding; share_prompt=false restores two sequences per pair.",
        ),
        checked="tests/unit/objectives/test_objectives.py: hand-derived values, and unbiasedness: its expectation over flips "
                "equals the clean DPO loss; " + TRL_PARITY,
        notes="Unbiased under a known flip rate ε, at the price of a loss that can be negative.",
    )

    name: str = "rdpo"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return rdpo_loss(s.margin, beta, self.epsilon)
