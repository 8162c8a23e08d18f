"""ORPO: odds-ratio preference optimisation, reference-free (Hong, Lee & Thorne, EMNLP 2024, arXiv 2403.07691)."""

from __future__ import annotations

from dataclasses import dataclass

from assay.lazy import F, torch

from assay.errors import check
from assay.objectives.preference import Beta, PairScores, PreferenceObjective
from assay.registry import register


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(P/(1-P)) with P = exp(mean token log-prob). log(1-P) = log(-expm1(lp)); lp is kept
    below -1e-6 so a fully confident sequence (P → 1) stays finite."""
    lp = mean_logp.clamp(max=-1e-6)
    return lp - torch.log(-torch.expm1(lp))


def orpo_loss(chosen_mean_logp: torch.Tensor, rejected_mean_logp: torch.Tensor, lam: float) -> torch.Tensor:
    """ORPO Eq. 6-7 (L_SFT + λ·L_OR; equation numbers not checked against the PDF): ℓ = NLL(y_w) - λ·log σ(log odds(y_w) - log odds(y_l)), NLL per token."""
    ratio = log_odds(chosen_mean_logp) - log_odds(rejected_mean_logp)
    return -chosen_mean_logp - lam * F.logsigmoid(ratio)


@register("objective", "orpo")
@dataclass
class ORPO(PreferenceObjective):
    """ORPO: NLL of the chosen response plus an odds-ratio penalty, reference-free (Hong, Lee & Thorne, EMNLP 2024, arXiv 2403.07691).

    ℓ = -lp(y_w)/|y_w| - λ·log σ(log odds(y_w) - log odds(y_l)), odds(y) = P/(1-P), P = exp(lp(y)/|y|)
    (Eq. 6-7, numbers not checked). Symbols → fields: λ → ``lam`` (TRL's ``beta``; the authors' code calls it ``alpha``).
    """

    name: str = "orpo"
    lam: float = 0.1
    """λ: weight of the odds-ratio term relative to the NLL (≥ 0; TRL default 0.1)."""

    def __post_init__(self) -> None:
        check(self.lam >= 0, "objective.lam", self.lam, "must be >= 0")
        super().__post_init__()

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return orpo_loss(s.policy_chosen / s.chosen_tokens, s.policy_rejected / s.rejected_tokens, self.lam)

    def rewards(self, s: PairScores, beta: Beta) -> tuple[torch.Tensor, torch.Tensor]:
        """The log odds of each response, whose difference ORPO's penalty pushes up."""
        return log_odds(s.policy_chosen / s.chosen_tokens).detach(), log_odds(s.policy_rejected / s.rejected_tokens).detach()
