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


@register("objective", "dr_dpo")
@dataclass
class DrDPO(DPO):
    """Dr. DPO: the DPO loss aggregated by Dr. DPO's soft-min (Wu et al., ICLR 2025, arXiv 2407.07880).

    L = -β'·log mean_i exp(-ℓ_i/β'), ℓ_i = -log σ(β·h_i). Symbols → fields: β → ``beta``,
    β' → ``dr_beta_prime``. The same as ``objective=dpo objective.aggregator=dr_dpo``.
    """

    name: str = "dr_dpo"
    aggregator: str = "dr_dpo"


@register("objective", "beta_dpo")
@dataclass
class BetaDPO(DPO):
    """β-DPO: DPO with batch-level dynamic β and β-guided filtering (Wu et al., NeurIPS 2024, arXiv 2407.08639).

    β_batch = β_0·[1 + α·(mean_kept(M_i) - M_0)], M_0 a moving average with momentum m, a fraction ρ
    of pairs kept by Gaussian weights around M_0. Symbols → fields: β_0 → ``beta``, α → ``beta_dpo_alpha``,
    m → ``beta_dpo_momentum``, ρ → ``beta_dpo_keep``. The same as ``objective=dpo objective.controller=beta_dpo``.
    """

    name: str = "beta_dpo"
    controller: str = "beta_dpo"
