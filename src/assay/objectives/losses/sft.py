"""Supervised fine-tuning: negative log-likelihood of the completion tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from assay.lazy import torch

from assay.cards import MethodCard
from assay.errors import check
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
    pack_factor: float = 2.0
    """Padding-free packing: the batch's examples are packed whole (first fit, longest first) into
    rows of at most max(1, pack_factor) times its longest example, each attending only to itself and
    keeping its own positions, so the forward and backward skip most of the padding. The log-probs
    and the loss are those of one example per row to float rounding. 0 = one example per padded row.
    Needs a model with ``sdpa`` or ``eager`` attention (a custom 4D mask)."""

    def __post_init__(self) -> None:
        check(self.pack_factor >= 0, "objective.pack_factor", self.pack_factor, "must be >= 0 (0: one example per row)")
        super().__post_init__()

    @property
    def custom_attention_mask(self) -> bool:
        return self.pack_factor > 0

    @property
    def data_format(self) -> str:
        return "sft"

    def compute(self, model: torch.nn.Module, batch: dict, training: bool = False, controller: Optional[torch.nn.Module] = None) -> ObjectiveOutput:
        lp = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"], pack_factor=self.pack_factor)
        return ObjectiveOutput(loss=sft_loss(lp.sum, lp.count), metrics={"confidence": lp.mean_prob, "token_acc": lp.token_acc, "correct": lp.correct},
                               token_logps=lp.token_logps, token_mask=lp.mask, weight=batch.get("weight"))
