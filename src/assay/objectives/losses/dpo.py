"""Direct Preference Optimization (Rafailov et al., NeurIPS 2023, arXiv 2305.18290)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.objectives.preference import Beta, PairScores, ReferenceObjective
from assay.registry import register


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: Beta,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. (7): ℓ = -log σ(β h), h = [log π(y_w|x) - log π_ref(y_w|x)] - [log π(y_l|x) - log π_ref(y_l|x)].

    Returns (per-pair loss, chosen reward β·(π_w - ref_w), rejected reward β·(π_l - ref_l)).
    ``logsigmoid`` keeps the loss finite at any margin (softplus(-βh) in exact arithmetic).
    """
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    margin = chosen_ratio - rejected_ratio
    loss = -F.logsigmoid(beta * margin)
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


@register("objective", "dpo")
@dataclass
class DPO(ReferenceObjective):
    """DPO with the sigmoid loss against a frozen reference (reference log-probs precomputed).

    Rafailov et al., NeurIPS 2023, arXiv 2305.18290, Eq. 7: ℓ = -log σ(β·h).
    Symbols → fields: β → ``beta``; h is computed from the policy and cached reference log-probs.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Rafailov et al. 2023, Direct Preference Optimization: Your Language Model is Secretly a Reward Model (NeurIPS 2023)",
        arxiv="2305.18290",
        code="eric-mitchell/direct-preference-optimization: trainers.py (preference_loss), not checked line by line; the formula is "
             "TRL's loss_type='sigmoid', checked against TRL v1.16.0 (trl/trainer/dpo_trainer.py, DPOTrainer._compute_loss)",
        defaults={"beta": "0.1 (paper App. B: 0.1; 0.5 for TL;DR summarisation): follows"},
        deviations=(
            "Reference log-probs are precomputed once before training (TRL's precompute_ref_log_probs) instead of a live "
            "reference forward pass: the same values for a frozen reference.",
            "Each pair is one shared-prompt sequence by default (share_prompt=true, prefix sharing, arXiv 2410.20305): the "
            "same log-probs up to float rounding; share_prompt=false restores two sequences per pair.",
        ),
        checked="tests/unit/objectives/test_losses.py: the loss against hand-derived numbers (log 2 at zero margin, mirrored "
                "margins, finite at extreme margins); tests/unit/objectives/test_trl_parity.py: the per-pair loss against TRL 1.16's own "
                "DPOTrainer._compute_loss (loss_type='sigmoid') on random inputs and edge cases, to float rounding",
        notes="The paper's optimiser (RMSprop, lr 1e-6, 150 warm-up steps, batch 64) is a run setting (optim.*, data.*), not this "
              "option's; assay's run defaults (AdamW, lr 1e-3, cosine) suit the tiny models.",
    )

    name: str = "dpo"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return dpo_loss(s.policy_chosen, s.policy_rejected, s.ref_chosen, s.ref_rejected, beta)[0]
