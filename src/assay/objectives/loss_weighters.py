"""Online loss weighters (config group ``objective/aggregator``): ``linupper``, ``quadratic``, ``extremes``.

Sow, Woisetschläger, Bulusu, Wang, Jacobsen & Liang, "Dynamic Loss-Based Sample Reweighting for
Improved Large Language Model Pretraining" (ICLR 2025, arXiv 2502.06733), as DataFlex implements it
(OpenDCAI/DataFlex ``src/dataflex/train/weighter/loss_weighter.py``, ``LossWeighter``, read for this
module). Every step, from the batch's per-sample losses ℓ_i alone:

    ℓ̃_i = 2δ·ℓ_i / (ℓ_max − ℓ_min) − δ·(ℓ_max + ℓ_min) / (ℓ_max − ℓ_min)     ∈ [−δ, δ]
                                                                     (denominator clamped at 1e-6)
    linupper:   g_i = min(ℓ̃_i + δ, δ)          rises linearly with the loss up to the batch's middle loss, flat above
    quadratic:  g_i = 1 − ℓ̃_i² / δ²            peaks at the middle loss, falls to 0 at both extremes
    extremes:   g_i = |ℓ̃_i|                    the lowest- and the highest-loss samples weigh most
    w_i = exp(g_i / r) / Σ_j exp(g_j / r),      L = Σ_i w_i · ℓ_i

The weights are computed without gradient (``torch.no_grad`` in DataFlex): ∂L/∂ℓ_i = w_i. The
weights sum to 1, so with equal g (all losses equal) L is the plain mean. DataFlex gathers the losses
of every rank before normalising and multiplies each rank's Σ w·ℓ by the world size, so DDP's gradient
average reproduces the global weighted sum: ``scope=global`` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from assay.cards import MethodCard
from assay.errors import check
from assay.lazy import torch
from assay.objectives.aggregators import SCOPES, Aggregator, gather_across_ranks, is_distributed
from assay.registry import register

STRATEGIES = ("linupper", "quadratic", "extremes")

DENOMINATOR_FLOOR = 1e-6
"""DataFlex's ``max(l_max - l_min, 1e-6)``: a batch of equal losses normalises to 0, not to NaN."""


def normalise_losses(loss: torch.Tensor, delta: float, valid: torch.Tensor) -> torch.Tensor:
    """ℓ̃ = 2δℓ/(ℓ_max − ℓ_min) − δ(ℓ_max + ℓ_min)/(ℓ_max − ℓ_min), min and max over the valid samples."""
    lo = torch.where(valid, loss, torch.full_like(loss, float("inf"))).min()
    hi = torch.where(valid, loss, torch.full_like(loss, float("-inf"))).max()
    denom = (hi - lo).clamp(min=DENOMINATOR_FLOOR)
    return torch.where(valid, 2.0 * delta * loss / denom - delta * (hi + lo) / denom, torch.zeros_like(loss))


def strategy_scores(normalised: torch.Tensor, strategy: str, delta: float) -> torch.Tensor:
    """g(ℓ̃) of one strategy (DataFlex ``apply_strategy``)."""
    if strategy == "linupper":
        return torch.minimum(normalised + delta, torch.full_like(normalised, delta))
    if strategy == "quadratic":
        return 1.0 - normalised**2 / delta**2
    if strategy == "extremes":
        return normalised.abs()
    raise ValueError(f"unknown loss-weighting strategy {strategy!r}; one of {list(STRATEGIES)}")


def loss_weights(loss: torch.Tensor, strategy: str, delta: float = 1.0, r: float = 1.0, kept: Optional[torch.Tensor] = None,
                 weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The per-sample weights w = softmax(g(ℓ̃)/r), detached, summing to 1 over the valid samples (kept,
    finite loss, positive per-example weight); 0 elsewhere. Per-example weights d (``data.weight_column``)
    multiply in: w ∝ d·exp(g/r)."""
    with torch.no_grad():
        x = loss.detach().double()
        valid = torch.isfinite(x) if kept is None else (kept > 0) & torch.isfinite(x)
        if weight is not None:
            valid = valid & (weight > 0)
        if not bool(valid.any()):
            return torch.zeros_like(loss)
        logits = strategy_scores(normalise_losses(x, delta, valid), strategy, delta) / r
        if weight is not None:
            logits = logits + torch.log(torch.where(valid, weight.double(), torch.ones_like(x)))
        return torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=0).to(loss.dtype)


@dataclass
class LossWeighter(Aggregator):
    """A DataFlex loss weighter: L = Σ w_i ℓ_i with w = softmax(g(ℓ̃)/r) from the batch's losses (detached)."""

    strategy: ClassVar[str] = ""
    delta: float = 1.0
    """δ (> 0): the normalised losses lie in [−δ, δ]. DataFlex's default (components.yaml) is 1.0."""
    r: float = 1.0
    """Temperature r (> 0) of w ∝ exp(g/r): smaller = sharper weights. DataFlex fixes r = 1 (``self.r = 1``)."""
    scope: str = "local"
    """Normalise over ``local`` (this device's micro-batch) or ``global`` (the losses of every rank, gathered
    without gradient, as DataFlex does; each rank's Σ w·ℓ is then multiplied by the world size)."""

    def __post_init__(self) -> None:
        check(self.delta > 0, "objective.aggregator.delta", self.delta, "must be > 0")
        check(self.r > 0, "objective.aggregator.r", self.r, "must be > 0")
        check(self.scope in SCOPES, "objective.aggregator.scope", self.scope, f"must be one of {list(SCOPES)}")

    @property
    def gathers_across_ranks(self) -> bool:
        return self.scope == "global"

    def weights(self, loss: torch.Tensor, kept: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        return loss_weights(loss, self.strategy, self.delta, self.r, kept, weight)

    def reduce(self, loss: torch.Tensor, kept: Optional[torch.Tensor] = None,
               weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        # The weights are not returned for recording: the per-sample store reads an aggregator's
        # weights as Dr. DPO's (low weight = suspect pair), which these are not.
        if self.gathers_across_ranks and is_distributed():
            mask = torch.ones_like(loss) if kept is None else kept.to(loss.dtype)
            masked = loss.detach().masked_fill(mask <= 0, float("nan"))
            everyone, mine = gather_across_ranks(masked, differentiable=False, fill=float("nan"))
            weights_all = None if weight is None else gather_across_ranks(weight.detach().to(loss.dtype), differentiable=False, fill=0.0)[0]
            w = loss_weights(everyone, self.strategy, self.delta, self.r, weight=weights_all)[mine]
            world = torch.distributed.get_world_size()
        else:
            w, world = self.weights(loss, kept, weight), 1
        # 0·ℓ stays 0 where a left-out sample's loss is not finite
        return torch.where(w > 0, w * loss, torch.zeros_like(loss)).sum() * world, None


def weighter_card(strategy: str, shape: str) -> MethodCard:
    return MethodCard(
        paper="Sow, Woisetschläger, Bulusu, Wang, Jacobsen & Liang 2025, Dynamic Loss-Based Sample Reweighting for Improved "
              f"Large Language Model Pretraining (ICLR 2025): the {strategy} strategy",
        arxiv="2502.06733",
        code="OpenDCAI/DataFlex: src/dataflex/train/weighter/loss_weighter.py (LossWeighter: normalize_losses, apply_strategy, "
             "get_weighted_loss), read for this implementation; the paper's own code was not read",
        defaults={
            "delta": "1.0 (DataFlex components.yaml weighters.loss.delta): follows",
            "r": "1 (DataFlex fixes self.r = 1): follows",
            "scope": "local (DataFlex gathers every rank's losses, i.e. global): differs: local is the same on one device; "
                     "scope=global follows DataFlex under DDP",
        },
        deviations=(
            "DataFlex trains its first warmup_step steps with the plain mean and weights after; here the weighting applies from "
            "the first step (a warm-up is an earlier stage: model.init_from=<run trained with the mean>).",
            "Samples a controller drops (kept = 0), non-finite losses and zero per-example weights are left out of the min/max and "
            "the softmax; per-example weights d (data.weight_column, an assay extension) multiply in as w ∝ d·exp(g/r).",
            "Composes with any per-sample loss (SFT, the DPO family, KTO); DataFlex applies it to SFT token-mean losses only.",
        ),
        checked="tests/unit/objectives/test_loss_weighters.py: the weights of a 4-sample batch and the weighted loss by hand, "
                "normalisation, detached weights (∂L/∂ℓ_i = w_i), equal losses = the mean, kept masks; composed with sft and dpo; "
                "tests/unit/objectives/test_loss_weighters_distributed.py: scope=global on two gloo ranks = one process on the whole batch",
        notes=f"{shape} The weights are not written to the per-sample store (its aggregator-weight column is Dr. DPO's).",
    )


@register("objective/aggregator", "linupper")
@dataclass
class LinUpper(LossWeighter):
    """LinUpper (Sow et al. 2025; DataFlex): w ∝ exp(min(ℓ̃ + δ, δ)/r), low-loss samples weigh less, the upper half alike."""

    card: ClassVar[MethodCard] = weighter_card(
        "LinUpper", "g = min(ℓ̃ + δ, δ): weights rise with the loss up to the batch's middle loss and are capped there, so "
                    "already-learned samples weigh less while the highest-loss (possibly noisy) ones get no extra weight.")
    name: str = "linupper"
    strategy: ClassVar[str] = "linupper"


@register("objective/aggregator", "quadratic")
@dataclass
class Quadratic(LossWeighter):
    """Quadratic (Sow et al. 2025; DataFlex): w ∝ exp((1 − ℓ̃²/δ²)/r), the middle losses weigh most."""

    card: ClassVar[MethodCard] = weighter_card(
        "Quadratic", "g = 1 − ℓ̃²/δ²: samples of medium loss weigh most, both the easiest and the hardest least.")
    name: str = "quadratic"
    strategy: ClassVar[str] = "quadratic"


@register("objective/aggregator", "extremes")
@dataclass
class Extremes(LossWeighter):
    """Extremes (Sow et al. 2025; DataFlex): w ∝ exp(|ℓ̃|/r), the lowest- and highest-loss samples weigh most."""

    card: ClassVar[MethodCard] = weighter_card(
        "Extremes", "g = |ℓ̃|: the lowest- and the highest-loss samples weigh most, the middle least.")
    name: str = "extremes"
    strategy: ClassVar[str] = "extremes"
