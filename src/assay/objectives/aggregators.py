"""Aggregators (config group ``objective/aggregator``): per-sample losses -> the batch loss.

``mean`` is the usual average. ``dr_dpo`` is Dr. DPO's distributionally robust aggregation
(Wu et al., ICLR 2025, arXiv 2407.07880; its equation number was not checked):

    L = -β' · log( (1/N) Σ_i exp(-ℓ_i / β') )  =  -β' · ( logsumexp_i(-ℓ_i/β') - log N )

computed with logsumexp, because exp(-ℓ/β') underflows to 0 at small β' and log(0) = -inf (research
note §3.2). Its gradient is Σ_i w_i ∇ℓ_i with w_i = softmax_i(-ℓ_i/β'): pairs with a high loss
(likely flipped) get little weight. β' → ∞ recovers the mean, β' → 0 the minimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from omegaconf import MISSING

from assay.cards import MethodCard
from assay.errors import check
from assay.lazy import torch
from assay.registry import register

SCOPES = ("local", "global")


def mean_loss(loss: torch.Tensor, kept: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over the kept samples (all when ``kept`` is None); 0 when none is kept. With per-example
    weights w (``data.weight_column``): Σ w·ℓ / Σ w over the kept samples (0 when Σ w = 0)."""
    if weight is None:
        if kept is None:
            return loss.mean()
        kept = kept.to(loss.dtype)
        return (loss * kept).sum() / kept.sum().clamp(min=1.0)
    w = weight.to(loss.dtype) if kept is None else weight.to(loss.dtype) * kept.to(loss.dtype)
    total = w.sum()
    # 0·ℓ stays 0 (and keeps its gradient 0) where a zero-weight sample's loss is not finite
    numerator = torch.where(w > 0, loss * w, torch.zeros_like(loss)).sum()
    return torch.where(total > 0, numerator / total.clamp(min=torch.finfo(loss.dtype).tiny), numerator * 0.0)


def dr_dpo_loss(loss: torch.Tensor, beta_prime: float, kept: Optional[torch.Tensor] = None,
                weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dr. DPO over one set of samples: (batch loss, per-sample weights softmax(-ℓ/β'), 0 where not kept).

    Computed in float64 around the kept samples' mean loss c (detached):
    L = c - β'·(logsumexp(-(ℓ - c)/β') - log N). At large β' the bracket is a tiny difference
    multiplied by β', which float32 rounding would turn into an error of order 1e-7·β'.

    Per-example weights w (``data.weight_column``) make the expectation a weighted one, the empirical
    distribution the soft-min ranges over being ∝ w instead of uniform:
    L = -β'·log(Σ_i w_i·exp(-ℓ_i/β') / Σ_i w_i), per-sample weights ∝ w_i·exp(-ℓ_i/β'); w = 1 is the plain form.
    """
    x = loss.double()
    valid = torch.isfinite(x) if kept is None else (kept > 0) & torch.isfinite(x)
    if weight is not None:
        valid = valid & (weight > 0)
    n = valid.sum().clamp(min=1)
    center = (torch.where(valid, x, torch.zeros_like(x)).sum() / n).detach()
    scores = (-(x - center) / beta_prime).masked_fill(~valid, float("-inf"))
    if weight is None:
        log_total = torch.log(n.double())
    else:
        log_w = torch.log(torch.where(valid, weight.double(), torch.ones_like(x)))
        scores = scores + log_w.masked_fill(~valid, 0.0)
        log_total = torch.log(torch.where(valid, weight.double(), torch.zeros_like(x)).sum().clamp(min=torch.finfo(torch.float64).tiny))
    value = center - beta_prime * (torch.logsumexp(scores, dim=0) - log_total)
    weights = torch.nan_to_num(torch.softmax(scores, dim=0), nan=0.0)
    return value.to(loss.dtype), weights.to(loss.dtype)


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def gather_across_ranks(x: torch.Tensor, differentiable: bool, fill: float) -> tuple[torch.Tensor, slice]:
    """Concatenate ``x`` [n_rank] over ranks (sizes may differ) and return (all, this rank's slice).

    ``differentiable`` uses ``torch.distributed.nn.all_gather``, whose backward sums the gradients
    of every rank's copy, so DDP's gradient average reproduces the gradient of the global loss.
    """
    if not is_distributed():
        return x, slice(0, x.shape[0])
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_list = [int(s.item()) for s in sizes]
    longest = max(sizes_list)
    padded = torch.cat([x, x.new_full((longest - x.shape[0],), fill)])
    if differentiable:
        from torch.distributed.nn.functional import all_gather as all_gather_with_grad

        parts = list(all_gather_with_grad(padded))
    else:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.detach())
    start = sum(sizes_list[:rank])
    return torch.cat([p[:n] for p, n in zip(parts, sizes_list)]), slice(start, start + x.shape[0])


@dataclass
class Aggregator:
    """Turns the per-sample losses of a batch into the batch loss."""

    name: str = MISSING
    plain: ClassVar[bool] = False
    """True for the plain mean: it adds nothing to a run's method label (``objective.method``)."""

    @property
    def gathers_across_ranks(self) -> bool:
        """True when the batch loss is reduced over every rank's samples: meaningful only in a run
        with several processes."""
        return False

    def reduce(self, loss: torch.Tensor, kept: Optional[torch.Tensor] = None,
               weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(batch loss, per-sample aggregation weights or None) over the kept samples (all when None),
        each weighing its per-example weight (``data.weight_column``; 1 when None)."""
        raise TypeError(f"{type(self).__name__} does not implement reduce()")


@register("objective/aggregator", "mean")
@dataclass
class Mean(Aggregator):
    """The mean of the per-sample losses over the kept samples."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/objectives/test_objectives.py: the mean over kept samples",
        notes="The plain average of the per-sample losses: the baseline for objective/aggregator=dr_dpo. With per-example "
              "weights (data.weight_column) Σ w·ℓ / Σ w over the batch (each micro-batch and device normalises by its own Σ w).",
    )

    name: str = "mean"
    plain: ClassVar[bool] = True

    def reduce(self, loss: torch.Tensor, kept: Optional[torch.Tensor] = None,
               weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return mean_loss(loss, kept, weight), None


@register("objective/aggregator", "dr_dpo")
@dataclass
class DrDPO(Aggregator):
    """Dr. DPO's soft-min -β'·log mean exp(-ℓ/β') (Wu et al., ICLR 2025, arXiv 2407.07880): trusts low-loss pairs, so likely-flipped pairs weigh little.

    Symbols → fields: β' → ``beta_prime``. Records each sample's weight softmax(-ℓ/β') as ``dr_weight``.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Wu et al. 2025, Dr. DPO, distributionally robust DPO (ICLR 2025)",
        arxiv="2407.07880",
        code="junkangwu/Dr_DPO: trainers.py (get_batch_metrics, mode_loss == 'DrDPO'), as the research note reads it; not re-read",
        defaults={
            "beta_prime": "1.0 (repo config loss.mode_weight 1.0; the README's command): follows",
            "scope": "local (the reference code aggregates each device's micro-batch): follows",
        },
        deviations=(
            "Computed as -β'·(logsumexp(-ℓ/β') - log N) around the detached mean loss in float64, not log(mean(exp)): the same "
            "value, finite at small β'. Its equation number in the paper was not checked.",
            "Samples a controller drops (kept = 0) are left out of the expectation; scope=global gathers the losses of every rank.",
            "With per-example weights (data.weight_column, an assay extension the paper does not have) the expectation is over "
            "the weighted empirical distribution: -β'·log(Σ w·exp(-ℓ/β') / Σ w), an integer weight counting as repeated samples.",
        ),
        checked="tests/unit/objectives/test_objectives.py: hand-derived value, the gradient as softmax(-ℓ/β')-weighted per-sample "
                "gradients, the limits (mean as β' grows, min as it shrinks); tests/unit/objectives/test_dr_dpo_distributed.py: "
                "scope=global across ranks",
    )

    name: str = "dr_dpo"
    beta_prime: float = 1.0
    """β' (> 0): large → mean loss, small → min loss. 1.0 is the paper's and repo's value
    (``loss.mode_weight=1.0``)."""
    scope: str = "local"
    """The expectation over ``local`` (this device's micro-batch, as in the reference code) or
    ``global`` (losses gathered across ranks with all_gather when training is distributed)."""

    def __post_init__(self) -> None:
        check(self.beta_prime > 0, "objective.aggregator.beta_prime", self.beta_prime, "must be > 0")
        check(self.scope in SCOPES, "objective.aggregator.scope", self.scope, f"must be one of {list(SCOPES)}")

    @property
    def gathers_across_ranks(self) -> bool:
        return self.scope == "global"

    def reduce(self, loss: torch.Tensor, kept: Optional[torch.Tensor] = None,
               weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.gathers_across_ranks and is_distributed():
            mask = torch.ones_like(loss) if kept is None else kept.to(loss.dtype)
            # Non-kept and padding entries carry an infinite loss: weight exp(-inf) = 0.
            masked = loss.masked_fill(mask <= 0, float("inf"))
            everyone, mine = gather_across_ranks(masked, differentiable=True, fill=float("inf"))
            weights_all = None if weight is None else gather_across_ranks(weight.detach().to(loss.dtype), differentiable=False, fill=0.0)[0]
            value, weights = dr_dpo_loss(everyone, self.beta_prime, weight=weights_all)
            return value, weights[mine]
        return dr_dpo_loss(loss, self.beta_prime, kept, weight)
