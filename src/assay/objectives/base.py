"""What every objective provides to the training loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import MISSING

from assay.errors import check

AGGREGATORS = {"mean"}


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    """[B] per-sample loss (per pair for preference objectives)."""
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    """[B] per-sample quantities worth logging and recording (confidence, rewards, margins)."""

    def detached(self) -> "ObjectiveOutput":
        return ObjectiveOutput(self.loss.detach(), {k: v.detach() for k, v in self.metrics.items()})


@dataclass
class ObjectiveConfig:
    name: str = MISSING
    aggregator: str = "mean"
    """How per-sample losses become the batch loss."""

    def __post_init__(self) -> None:
        check(self.aggregator in AGGREGATORS, "objective.aggregator", self.aggregator, f"must be one of {sorted(AGGREGATORS)}")

    # ---- capabilities the loop asks about (never the objective's name) -----------------------
    @property
    def data_format(self) -> str:
        """The data format this objective trains on."""
        raise TypeError(f"{type(self).__name__} does not declare its data_format")

    @property
    def needs_reference(self) -> bool:
        """True when the loss reads reference-model log-probs (precomputed before training)."""
        return False

    def compute(self, model: torch.nn.Module, batch: dict) -> ObjectiveOutput:
        raise TypeError(f"{type(self).__name__} does not implement compute()")

    def aggregate(self, loss: torch.Tensor) -> torch.Tensor:
        return loss.mean()
