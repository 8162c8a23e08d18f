"""AOT, paired: alignment via optimal transport (Melnyk et al., NeurIPS 2024, arXiv 2406.05882).

AOT asks for first-order stochastic dominance of the policy's log-ratio distribution over the
reference's, which in one dimension is a comparison of sorted samples (the optimal transport plan
between two empirical distributions on the line). Paired: over the batch, the policy's margins
u = lp(y_w) - lp(y_l) and the reference's v = lp_ref(y_w) - lp_ref(y_l) are sorted apart, and
with Δ_(i) = u_(i) - v_(i) at rank i and label smoothing ε:

    ℓ_(i) = -(1-ε)·log σ(βΔ_(i)) - ε·log σ(-βΔ_(i))

A loss belongs to a rank, not to a pair: rank i's loss is recorded on the pair whose policy margin
has rank i (the batch mean is TRL's loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.errors import check
from assay.objectives.preference import PRECOMPUTED_REFERENCE, SHARED_PROMPT, Beta, PairScores, ReferenceObjective, trl_code
from assay.registry import register

AOT_PAPER = "Melnyk et al. 2024, Distributional Preference Alignment of LLMs via Optimal Transport (NeurIPS 2024)"
AOT_CHECKED = ("tests/unit/objectives/test_trl_parity.py: the batch loss (the mean over ranks) against TRL 1.16's own "
               "DPOTrainer._compute_loss on random batches and edge cases, to float rounding")
AOT_DEVIATIONS = (
    "The sort covers one device's micro-batch, as in TRL: with several devices or gradient accumulation each part is sorted "
    "apart, not the optimizer batch.",
    "Per-pair records (loss, dynamics) give each rank's loss to the pair whose policy value has that rank; only the batch "
    "mean is the method's. Per-example weights, Dr. DPO, β-DPO and WPO are refused (TRL refuses use_weighting for aot too).",
    PRECOMPUTED_REFERENCE,
    SHARED_PROMPT,
)


def smoothed_logistic(delta: torch.Tensor, beta: Beta, epsilon: float) -> torch.Tensor:
    """-(1-ε)·log σ(βΔ) - ε·log σ(-βΔ)."""
    return -(1 - epsilon) * F.logsigmoid(beta * delta) - epsilon * F.logsigmoid(-beta * delta)


def sorted_gap_loss(policy: torch.Tensor, reference: torch.Tensor, beta: Beta, epsilon: float) -> torch.Tensor:
    """[B] the loss of Δ_(i) = sort(policy)_(i) - sort(reference)_(i), placed on the pair whose ``policy`` value has rank i."""
    ranked, order = torch.sort(policy, dim=0)
    loss = smoothed_logistic(ranked - torch.sort(reference, dim=0).values, beta, epsilon)
    return loss[torch.argsort(order)]


@register("objective", "aot")
@dataclass
class AOT(ReferenceObjective):
    """AOT, paired: the sorted policy margins dominate the sorted reference margins (Melnyk et al., NeurIPS 2024, arXiv 2406.05882).

    ℓ_(i) = -(1-ε)·log σ(β·(u_(i) - v_(i))) - ε·log σ(-β·(u_(i) - v_(i))), u = lp(y_w) - lp(y_l) and
    v = lp_ref(y_w) - lp_ref(y_l) each sorted over the batch. Symbols → fields: β → ``beta``, ε → ``epsilon``
    (TRL's ``label_smoothing``).
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper=AOT_PAPER,
        arxiv="2406.05882",
        code=trl_code("aot"),
        defaults={
            "beta": "0.1 (TRL's beta default; the paper's value was not checked): follows TRL",
            "epsilon": "0 (TRL's label_smoothing default): follows TRL",
        },
        deviations=AOT_DEVIATIONS,
        checked=AOT_CHECKED,
        notes="Batch-level: the loss depends on which pairs share a batch; the paper's batch sizes matter more than for DPO.",
    )

    name: str = "aot"
    epsilon: float = 0.0
    """ε: label smoothing of the logistic loss on the sorted gaps, in [0, 0.5) (TRL's ``label_smoothing``)."""
    sorts_batch: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check(0.0 <= self.epsilon < 0.5, "objective.epsilon", self.epsilon, "must be in [0, 0.5)")
        super().__post_init__()

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return sorted_gap_loss(s.policy_chosen - s.policy_rejected, s.ref_chosen - s.ref_rejected, beta, self.epsilon)
