"""Conservative DPO (cDPO): DPO with label smoothing (Mitchell 2023, ericmitchell.ai/cdpo.pdf).

Assumes each pair's label is flipped with probability ε. With z = β·h and the softplus identities
-log σ(z) = softplus(-z), -log σ(-z) = softplus(z) (finite at any |z|):

    ℓ = (1-ε)·softplus(-z) + ε·softplus(z)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.objectives.preference import Beta, FlipRateObjective, PairScores
from assay.registry import register


def cdpo_loss(margin: torch.Tensor, beta: Beta, epsilon: float) -> torch.Tensor:
    """Mitchell (2023) cDPO note, Eq. 3: the DPO loss against soft labels (1-ε, ε)."""
    z = beta * margin
    return (1 - epsilon) * F.softplus(-z) + epsilon * F.softplus(z)


@register("objective", "cdpo")
@dataclass
class ConservativeDPO(FlipRateObjective):
    """cDPO: DPO with label smoothing ε (Mitchell 2023, ericmitchell.ai/cdpo.pdf, Eq. 3).

    ℓ = (1-ε)·(-log σ(βh)) + ε·(-log σ(-βh)). Symbols → fields: β → ``beta``, ε → ``epsilon``.
    Biased under flips (its minimiser is a finite margin), but bounded below by 0.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Mitchell 2023, the cDPO note (ericmitchell.ai/cdpo.pdf, Eq. 3; no arXiv version)",
        arxiv=None,
        code="huggingface/trl v1.16.0: trl/experimental/cpo/cpo_trainer.py (CPOTrainer.cpo_loss, loss_type='sigmoid' with "
             "label_smoothing, applied to the margin h; TRL 1.16's DPO sigmoid no longer smooths); junkangwu/Dr_DPO: trainers.py "
             "(preference_loss, label smoothing) as the research note reads it",
        defaults={
            "beta": "0.1 (the DPO default; the note fixes none): follows DPO",
            "epsilon": "0.1 (the note: ε is the assumed flip rate, no default; TRL's DPOConfig cites 0.1 from the robust-DPO paper): follows TRL",
        },
        deviations=(
            "Reference log-probs are precomputed once before training (TRL's precompute_ref_log_probs) instead of a live "
            "reference forward pass: the same values for a frozen reference.",
            "Each pair is one shared-prompt sequence by default (share_prompt=true, prefix sharing, arXiv 2410.20305): the "
            "same log-probs up to float rounding; share_prompt=false restores two sequences per pair.",
        ),
        checked="tests/unit/objectives/test_objectives.py: hand-derived values, and that cDPO is biased under flips where rDPO is not; "
                "tests/unit/objectives/test_trl_parity.py: against TRL 1.16's CPOTrainer.cpo_loss (sigmoid, label_smoothing) to float rounding",
        notes="ε is the assumed probability that a pair's label is flipped; the loss is bounded below by 0 but its minimiser is a "
              "finite margin.",
    )

    name: str = "cdpo"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return cdpo_loss(s.margin, beta, self.epsilon)
