"""Supervised fine-tuning: negative log-likelihood of the completion tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from assay.lazy import torch

from assay.cards import MethodCard
from assay.objectives.base import ObjectiveConfig, ObjectiveOutput
from assay.objectives.logps import sequence_logps
from assay.registry import register


def sft_loss(logp_sum: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Per-sample mean NLL over completion tokens: -(1/|y|) Σ_t log π(y_t | x, y_<t)."""
    return -logp_sum / n_tokens


@register("objective", "sft")
@dataclass
class SFT(ObjectiveConfig):
    """Supervised fine-tuning: per-sample mean negative log-likelihood of the completion."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        deviations=(
            "The batch loss is the mean over samples of each sample's per-token mean NLL (every example weighs the same, "
            "whatever its length), not the mean over all tokens of the batch.",
        ),
        checked="tests/unit/objectives/test_losses.py: the loss is the mean token NLL; tests/unit/objectives/test_objectives.py: "
                "its recorded confidence, token accuracy and correctness by hand",
        notes="Plain supervised fine-tuning on the completion tokens: the baseline the other objectives start from, not a "
              "published method.",
    )

    name: str = "sft"

    @property
    def data_format(self) -> str:
        return "sft"

    def compute(self, model: torch.nn.Module, batch: dict, training: bool = False, controller: Optional[torch.nn.Module] = None) -> ObjectiveOutput:
        lp = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        return ObjectiveOutput(loss=sft_loss(lp.sum, lp.count), metrics={"confidence": lp.mean_prob, "token_acc": lp.token_acc, "correct": lp.correct},
                               token_logps=lp.token_logps, token_mask=lp.mask, weight=batch.get("weight"))
