"""ORPO: odds-ratio preference optimisation, reference-free (Hong, Lee & Thorne, EMNLP 2024, arXiv 2403.07691)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.errors import check
from assay.objectives.preference import Beta, PairScores, PreferenceObjective
from assay.registry import register


LN2 = 0.6931471805599453


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, exact in floating point (Mächler 2012, "Accurately computing
    log(1 - exp(-|a|))"): log(-expm1(x)) for x > -ln 2, where 1 - e^x cancels, and log1p(-e^x) below,
    where e^x is small. Each branch is evaluated only on its own side of -ln 2 (the other side gets
    -ln 2), so ``torch.where`` never multiplies an infinite gradient of the unused branch by 0."""
    near = x > -LN2
    a = torch.log(-torch.expm1(torch.where(near, x, torch.full_like(x, -LN2))))
    b = torch.log1p(-torch.exp(torch.where(near, torch.full_like(x, -LN2), x)))
    return torch.where(near, a, b)


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(P/(1-P)) = lp - log(1 - e^lp) with P = exp(lp), lp the mean token log-prob, as in TRL's
    ``odds_ratio_loss`` (log1p(-exp(lp))), with an exact, stable log(1 - e^lp) (:func:`log1mexp`).

    Why exact near certainty: ORPO's odds-ratio term compares responses the policy already finds
    very likely (mean log-probs of -1e-8 and -1e-7 are odds of 18.4 and 16.1 on the log scale).
    The former clamp at -1e-6 made every such pair a tie (ratio 0, a constant loss, no gradient
    for the rejected response), so the penalty stopped separating exactly the preferred and the
    rejected responses that SFT had pushed towards P = 1, and it disagreed with TRL there.

    At lp = 0 exactly (P = 1) the log odds are +inf; that is unavoidable, so lp is clamped to
    -tiny (the smallest normal number of its dtype): for every lp <= -tiny the value and gradient
    are exact and finite (the gradient of log(1 - e^lp) is about 1/lp, which would overflow on the
    subnormals), while subnormal lp, 0 and (impossible) positive lp take the value at -tiny, e.g.
    87.3 in float32 and 708.4 in float64, with no gradient through the odds."""
    lp = mean_logp.clamp(max=-torch.finfo(mean_logp.dtype).tiny)
    return lp - log1mexp(lp)


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
    The log odds are exact up to P → 1 (:func:`log_odds`), so near-certain pairs keep a gradient.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Hong, Lee & Thorne 2024, ORPO: Monolithic Preference Optimization without Reference Model (EMNLP 2024)",
        arxiv="2403.07691",
        code="huggingface/trl v1.16.0: trl/experimental/orpo/orpo_trainer.py (ORPOTrainer.odds_ratio_loss, average_log_prob=True); "
             "the authors' repository was not checked",
        defaults={"lam": "0.1 (TRL's beta default 0.1; the paper's own value was not checked): follows TRL"},
        deviations=(
            "Equation numbers (Eq. 6-7) not checked against the PDF.",
        ),
        checked="tests/unit/objectives/test_objectives.py: hand-derived value; tests/unit/objectives/test_trl_parity.py: the "
                "odds-ratio term against TRL 1.16's ORPOTrainer.odds_ratio_loss (float32) on random inputs and edge cases",
        notes="Reference-free. The odds use the per-token mean log-prob (TRL's average_log_prob=True); the NLL term is per "
          "token too.",
    )

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
