"""Direct Preference Optimization (Rafailov et al., NeurIPS 2023, arXiv 2305.18290)."""

from __future__ import annotations

from dataclasses import dataclass

from assay.lazy import F, torch

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

    name: str = "dpo"

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return dpo_loss(s.policy_chosen, s.policy_rejected, s.ref_chosen, s.ref_rejected, beta)[0]
