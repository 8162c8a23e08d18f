"""BCO for pairs: each response classified on its own reward (Jung et al. 2024, arXiv 2404.04656).

With r = β·ρ (ρ = lp - lp_ref), the chosen response is a positive and the rejected one a negative
of a binary classifier whose logit is the reward shifted by δ:

    ℓ = -log σ(r_w - δ) - log σ(-(r_l - δ))

TRL 1.16's ``bco_pair`` has δ = 0 (the default here, ``reward_shift=false``); the paper's reward
shift, δ the running mean of the rewards as TRL's BCOTrainer and TRL's earlier ``bco_pair``
computed it, is ``reward_shift=true`` (state: :mod:`assay.objectives.reward_shift`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.errors import check
from assay.objectives.preference import PRECOMPUTED_REFERENCE, SHARED_PROMPT, TRL_PARITY, Beta, PairScores, ReferenceObjective, trl_code
from assay.registry import register


def bco_pair_loss(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: Beta, delta: Beta = 0.0) -> torch.Tensor:
    """-log σ(βρ_w - δ) - log σ(-(βρ_l - δ))."""
    return -F.logsigmoid(beta * chosen_ratio - delta) - F.logsigmoid(-(beta * rejected_ratio - delta))


@register("objective", "bco_pair")
@dataclass
class BCOPair(ReferenceObjective):
    """BCO for pairs: chosen and rejected classified by their own rewards (Jung et al. 2024, arXiv 2404.04656).

    ℓ = -log σ(βρ_w - δ) - log σ(-(βρ_l - δ)). Symbols → fields: β → ``beta``; δ = 0, or the running
    mean of the rewards with ``reward_shift``.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Jung et al. 2024, Binary Classifier Optimization for Large Language Model Alignment",
        arxiv="2404.04656",
        code=trl_code("bco_pair") + "; reward_shift=true: TRL <= 0.x's bco_pair and BCOTrainer (RunningMoments.update of the batch's "
             "mean reward, then delta = running.mean)",
        defaults={
            "beta": "0.1 (TRL's beta default): follows TRL",
            "reward_shift": "false (TRL 1.16's bco_pair: δ = 0); differs from the paper, whose reward shift δ is reward_shift=true",
        },
        deviations=(
            "By default δ = 0, as TRL 1.16 computes bco_pair; reward_shift=true restores the paper's shift as TRL computed it "
            "before (the mean of every training batch's mean reward, updated before the loss).",
            "reward_shift=true: evaluation batches read δ without updating it (TRL's earlier code updated it in evaluation too).",
            "The paper's underlying-distribution matching (density-ratio weighting of unpaired data) is not implemented: this is "
            "the pairwise loss.",
            PRECOMPUTED_REFERENCE,
            SHARED_PROMPT,
        ),
        checked=TRL_PARITY + "; tests/unit/objectives/test_new_losses.py: the reward shift against hand-computed running means, "
                "and that it travels in a state dict",
    )

    name: str = "bco_pair"
    reward_shift: bool = False
    """Shift the rewards by δ, the running mean of the batches' mean rewards (the paper's reward
    shift; a buffer saved in every checkpoint). Refuses a controller (β-DPO)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward_shift:
            check(self.controller.plain, "objective/controller", self.controller.name,
                  "bco_pair with objective.reward_shift=true keeps its own running state; use objective/controller=none")

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return bco_pair_loss(s.chosen_ratio, s.rejected_ratio, beta)

    def build_loss_state(self) -> Optional[torch.nn.Module]:
        if not self.reward_shift:
            return None
        from assay.objectives.reward_shift import RewardShift

        return RewardShift()

    def stateful_pair_loss(self, s: PairScores, beta: Beta, state: torch.nn.Module, training: bool) -> torch.Tensor:
        r_w, r_l = beta * s.chosen_ratio, beta * s.rejected_ratio
        delta = state.shift(torch.cat([r_w, r_l]).mean(), training).to(r_w.dtype)
        return bco_pair_loss(s.chosen_ratio, s.rejected_ratio, beta, delta)
