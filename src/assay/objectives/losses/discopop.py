"""DiscoPOP: the log-ratio modulated loss found by LLM-driven search (Lu et al., NeurIPS 2024, arXiv 2406.08414, Eq. 5).

With z = β·h, a blend of the logistic (DPO) loss and the exponential loss, the mixing weight a
sigmoid of the margin at temperature τ:

    ℓ = (1 - σ(z/τ))·(-log σ(z)) + σ(z/τ)·exp(-z)

Computed as σ(-z/τ)·softplus(-z) + exp(log σ(z/τ) - z), the same value, finite at any z; TRL's
σ(z/τ)·exp(-z) is 0·inf = nan once -z exceeds the exponent range (z < -88 in float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.errors import check
from assay.objectives.preference import PRECOMPUTED_REFERENCE, SHARED_PROMPT, TRL_PARITY, Beta, PairScores, ReferenceObjective, trl_code
from assay.registry import register


def discopop_loss(margin: torch.Tensor, beta: Beta, tau: float) -> torch.Tensor:
    """(1 - σ(βh/τ))·softplus(-βh) + σ(βh/τ)·exp(-βh), in a form finite at any margin."""
    z = beta * margin
    return torch.sigmoid(-z / tau) * F.softplus(-z) + torch.exp(F.logsigmoid(z / tau) - z)


@register("objective", "discopop")
@dataclass
class DiscoPOP(ReferenceObjective):
    """DiscoPOP (LRML): logistic and exponential losses blended by σ(βh/τ) (Lu et al., NeurIPS 2024, arXiv 2406.08414, Eq. 5).

    ℓ = (1 - σ(βh/τ))·(-log σ(βh)) + σ(βh/τ)·exp(-βh). Symbols → fields: β → ``beta``, τ → ``tau``.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Lu et al. 2024, Discovering Preference Optimization Algorithms with and for Large Language Models (NeurIPS 2024)",
        arxiv="2406.08414",
        code=trl_code("discopop"),
        defaults={
            "beta": "0.1 (TRL's beta default; the paper's value was not checked): follows TRL",
            "tau": "0.05 (TRL's discopop_tau: 'the paper recommends the default value 0.05'): follows",
        },
        deviations=(
            "σ(z/τ)·exp(-z) is computed as exp(log σ(z/τ) - z): the same value, but finite where TRL's product is nan "
            "(z = βh below about -88 in float32).",
            PRECOMPUTED_REFERENCE,
            SHARED_PROMPT,
        ),
        checked=TRL_PARITY + "; and finite where TRL's form overflows",
        notes="Non-convex in the margin: the exponential part dominates once σ(βh/τ) ≈ 1, i.e. for clearly positive margins.",
    )

    name: str = "discopop"
    tau: float = 0.05
    """τ: temperature of the mixing weight σ(βh/τ) (> 0; the paper's 0.05)."""

    def __post_init__(self) -> None:
        check(self.tau > 0, "objective.tau", self.tau, "must be > 0")
        super().__post_init__()

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return discopop_loss(s.margin, beta, self.tau)
