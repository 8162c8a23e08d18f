"""Direct Preference Optimization (Rafailov et al., NeurIPS 2023, arXiv 2305.18290)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from assay.errors import check
from assay.objectives.base import ObjectiveConfig, ObjectiveOutput
from assay.objectives.logps import sequence_logps
from assay.registry import register


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
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
class DPO(ObjectiveConfig):
    """DPO with the sigmoid loss against a frozen reference (reference log-probs precomputed)."""

    name: str = "dpo"
    beta: float = 0.1
    """β: strength of the KL constraint to the reference (paper default 0.1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, "objective.beta", self.beta, "must be > 0")

    @property
    def data_format(self) -> str:
        return "preference"

    @property
    def needs_reference(self) -> bool:
        return True

    def compute(self, model: torch.nn.Module, batch: dict) -> ObjectiveOutput:
        lp = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        chosen, rejected = lp.sum.chunk(2)
        loss, r_chosen, r_rejected = dpo_loss(chosen, rejected, batch["ref_chosen_logps"], batch["ref_rejected_logps"], self.beta)
        margin = r_chosen - r_rejected
        return ObjectiveOutput(
            loss=loss,
            metrics={
                "reward_chosen": r_chosen,
                "reward_rejected": r_rejected,
                "reward_margin": margin,
                "pref_acc": (margin > 0).float(),
                # the model's preference probability σ(βh): the dynamics' confidence for pairs
                "confidence": torch.sigmoid(margin),
            },
        )
