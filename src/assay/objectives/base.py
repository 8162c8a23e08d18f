"""What every objective provides to the training loop.

An objective is a loss (``compute``: a batch -> per-sample losses), an aggregator
(``objective/aggregator``: per-sample losses -> the batch loss, ``aggregate``) and a controller
(``objective/controller``). Dynamic objectives (β-DPO) keep running statistics in the runtime
controller, a small ``torch.nn.Module`` of buffers that the LightningModule owns, so the statistics
travel in every checkpoint and evaluation can read them without changing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from assay.lazy import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from assay.errors import check
from assay.objectives.aggregators import Aggregator, Mean
from assay.objectives.controllers import Controller, NoController
from assay.registry import lookup, options


def method_label(loss: str, aggregator: Aggregator, controller: Controller) -> str:
    """``loss[+aggregator][+controller]``, leaving out the plain mean and the fixed β."""
    return "+".join([loss, *(part.name for part in (aggregator, controller) if not part.plain)])


def _method_of(*, _parent_: DictConfig) -> str:
    """Resolver of ``objective.method``: the label of the composed objective node."""
    names = []
    for axis in ("aggregator", "controller"):
        node = _parent_[axis]
        if not isinstance(node, DictConfig):
            return str(node)  # a choice given as a value; ObjectiveConfig refuses it in one line
        if not lookup(f"objective/{axis}", node.name).plain:
            names.append(node.name)
    return "+".join([_parent_.name, *names])


if not OmegaConf.has_resolver("assay.objective_method"):
    OmegaConf.register_new_resolver("assay.objective_method", _method_of)


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    """[B] per-sample loss (per pair for preference objectives)."""
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    """[B] per-sample quantities worth logging and recording (confidence, rewards, margins)."""
    kept: Optional[torch.Tensor] = None
    """[B] 1 for the samples that enter the batch loss (β-DPO's filter); None keeps every sample."""
    token_logps: Optional[torch.Tensor] = None
    """[B, T] per-token log-probs of the response (0 where ``token_mask`` is False), where the loss is a
    token-level likelihood (SFT): what per-token reweighting (DoReMi's proxy) reads."""
    token_mask: Optional[torch.Tensor] = None
    weight: Optional[torch.Tensor] = None
    """[B] per-example weights read from the data (``data.weight_column``): the aggregator's weighted
    mean (or weighted expectation, Dr. DPO); None weighs every sample 1."""

    def detached(self) -> "ObjectiveOutput":
        kept = None if self.kept is None else self.kept.detach()
        weight = None if self.weight is None else self.weight.detach()
        return ObjectiveOutput(self.loss.detach(), {k: v.detach() for k, v in self.metrics.items()}, kept, weight=weight)


@dataclass
class ObjectiveConfig:
    name: str = MISSING
    aggregator: Any = MISSING
    """How per-sample losses become the batch loss: an entry of ``objective/aggregator`` (``mean``, or
    ``dr_dpo``: Dr. DPO, Wu et al., ICLR 2025, arXiv 2407.07880, L = -β'·log mean_i exp(-ℓ_i/β'), a
    soft-min that trusts low-loss samples and so down-weights likely-flipped pairs; or an online loss
    weighter ``linupper``, ``quadratic``, ``extremes``: Sow et al., ICLR 2025, arXiv 2502.06733, detached
    weights from the batch's normalised losses). The mean when an objective is built in Python without one."""
    controller: Any = MISSING
    """Running state that adapts the loss to the batch: an entry of ``objective/controller``
    (``none``, or ``beta_dpo``: β-DPO, Wu et al., NeurIPS 2024, arXiv 2407.08639). None when an
    objective is built in Python without one."""
    method: str = "${assay.objective_method:}"
    """The method this run trains, derived from the loss, aggregator and controller: the loss name,
    then the aggregator and controller where they are not the plain mean and fixed β (``dpo``,
    ``dpo+dr_dpo``, ``dpo+beta_dpo``, ``dpo+dr_dpo+beta_dpo``). ``objective=dr_dpo`` and
    ``objective=dpo objective/aggregator=dr_dpo`` are the same method, so ``assay-compare --by objective``
    (which groups by it) gives them one row. Not set by hand."""

    def __post_init__(self) -> None:
        if self.aggregator is MISSING:
            self.aggregator = Mean()
        if self.controller is MISSING:
            self.controller = NoController()
        for axis, kind in (("aggregator", Aggregator), ("controller", Controller)):
            value = getattr(self, axis)
            check(isinstance(value, kind), f"objective.{axis}", value,
                  f"is a config group: choose it with objective/{axis}=<option>, one of {sorted(options(f'objective/{axis}'))}")
        self.controller.check(self)
        derived = method_label(self.name, self.aggregator, self.controller)
        if self.method is MISSING or str(self.method).startswith("${"):
            self.method = derived
        check(self.method == derived, "objective.method", self.method,
              f"is derived from the loss, aggregator and controller ({derived}); choose objective/aggregator and objective/controller instead")

    # ---- capabilities the loop asks about (never the objective's name) -----------------------
    @property
    def data_format(self) -> str:
        """The data format this objective trains on."""
        raise TypeError(f"{type(self).__name__} does not declare its data_format")

    @property
    def gathers_across_ranks(self) -> bool:
        """True when the batch loss is reduced over every rank's samples (Dr. DPO with
        ``objective.aggregator.scope=global``): meaningful only in a run with several processes."""
        return self.aggregator.gathers_across_ranks

    @property
    def needs_reference(self) -> bool:
        """True when the loss reads reference-model log-probs (precomputed before training)."""
        return False

    @property
    def collation(self) -> dict:
        """Keyword arguments of ``collate.Collator`` for the batch layout this objective reads."""
        return {}

    @property
    def custom_attention_mask(self) -> bool:
        """True when the objective scores its batches through a custom 4D attention mask (packed or
        shared-prompt layouts), which flash-attention kernels do not take."""
        return False

    def build_controller(self) -> Optional[torch.nn.Module]:
        """Running state of a dynamic objective (buffers only), or None for a static one."""
        return self.controller.build(self)

    def compute(
        self, model: torch.nn.Module, batch: dict, training: bool = False, controller: Optional[torch.nn.Module] = None
    ) -> ObjectiveOutput:
        """Per-sample loss and metrics. ``training`` is False in evaluation: controllers then read
        their statistics without updating them and keep every sample."""
        raise TypeError(f"{type(self).__name__} does not implement compute()")

    def aggregate(self, out: Union[ObjectiveOutput, torch.Tensor]) -> torch.Tensor:
        """The batch loss. Dr. DPO also records each sample's weight in ``out.metrics["dr_weight"]``.
        Per-example weights from the data (``out.weight``) enter the aggregator's reduction."""
        if isinstance(out, torch.Tensor):
            out = ObjectiveOutput(out)
        example_weight = None if out.weight is None else out.weight.to(out.loss.device, out.loss.dtype)
        loss, weight = self.aggregator.reduce(out.loss, out.kept, example_weight)
        if weight is not None:
            out.metrics["dr_weight"] = weight.detach()
        return loss
