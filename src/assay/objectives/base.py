"""What every objective provides to the training loop.

An objective turns a batch into a per-sample loss (``compute``); its aggregator turns that into the
batch loss (``aggregate``). Dynamic objectives (β-DPO) keep running statistics in a controller, a
small ``torch.nn.Module`` of buffers that the LightningModule owns, so the statistics travel in
every checkpoint and evaluation can read them without changing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from assay.lazy import torch
from omegaconf import MISSING

from assay.errors import check
from assay.objectives.aggregators import AGGREGATORS, SCOPES, reduce_losses


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    """[B] per-sample loss (per pair for preference objectives)."""
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    """[B] per-sample quantities worth logging and recording (confidence, rewards, margins)."""
    kept: Optional[torch.Tensor] = None
    """[B] 1 for the samples that enter the batch loss (β-DPO's filter); None keeps every sample."""

    def detached(self) -> "ObjectiveOutput":
        kept = None if self.kept is None else self.kept.detach()
        return ObjectiveOutput(self.loss.detach(), {k: v.detach() for k, v in self.metrics.items()}, kept)


@dataclass
class ObjectiveConfig:
    name: str = MISSING
    aggregator: str = "mean"
    """How per-sample losses become the batch loss: ``mean``, or ``dr_dpo`` (Dr. DPO, Wu et al.,
    ICLR 2025, arXiv 2407.07880: L = -β'·log mean_i exp(-ℓ_i/β'), a soft-min that trusts
    low-loss samples and so down-weights likely-flipped pairs)."""
    dr_beta_prime: float = 1.0
    """β' of Dr. DPO (> 0): large → mean loss, small → min loss. 1.0 is the paper's and repo's value
    (``loss.mode_weight=1.0``)."""
    dr_scope: str = "local"
    """Dr. DPO's expectation over ``local`` (this device's micro-batch, as in the reference code)
    or ``global`` (losses gathered across ranks with all_gather when training is distributed)."""

    def __post_init__(self) -> None:
        check(self.aggregator in AGGREGATORS, "objective.aggregator", self.aggregator, f"must be one of {sorted(AGGREGATORS)}")
        check(self.dr_beta_prime > 0, "objective.dr_beta_prime", self.dr_beta_prime, "must be > 0")
        check(self.dr_scope in SCOPES, "objective.dr_scope", self.dr_scope, f"must be one of {list(SCOPES)}")

    # ---- capabilities the loop asks about (never the objective's name) -----------------------
    @property
    def data_format(self) -> str:
        """The data format this objective trains on."""
        raise TypeError(f"{type(self).__name__} does not declare its data_format")

    @property
    def gathers_across_ranks(self) -> bool:
        """True when the batch loss is reduced over every rank's samples (Dr. DPO with
        ``dr_scope=global``): meaningful only in a run with several processes."""
        return self.aggregator != "mean" and self.dr_scope == "global"

    @property
    def needs_reference(self) -> bool:
        """True when the loss reads reference-model log-probs (precomputed before training)."""
        return False

    @property
    def collation(self) -> dict:
        """Keyword arguments of ``collate.Collator`` for the batch layout this objective reads."""
        return {}

    def build_controller(self) -> Optional[torch.nn.Module]:
        """Running state of a dynamic objective (buffers only), or None for a static one."""
        return None

    def compute(
        self, model: torch.nn.Module, batch: dict, training: bool = False, controller: Optional[torch.nn.Module] = None
    ) -> ObjectiveOutput:
        """Per-sample loss and metrics. ``training`` is False in evaluation: controllers then read
        their statistics without updating them and keep every sample."""
        raise TypeError(f"{type(self).__name__} does not implement compute()")

    def aggregate(self, out: Union[ObjectiveOutput, torch.Tensor]) -> torch.Tensor:
        """The batch loss. Dr. DPO also records each sample's weight in ``out.metrics["dr_weight"]``."""
        if isinstance(out, torch.Tensor):
            out = ObjectiveOutput(out)
        loss, weight = reduce_losses(out.loss, out.kept, self.aggregator, self.dr_beta_prime, self.dr_scope)
        if weight is not None:
            out.metrics["dr_weight"] = weight.detach()
        return loss
