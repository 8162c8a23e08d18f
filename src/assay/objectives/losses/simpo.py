"""SimPO: reference-free, length-normalised preference optimisation (Meng, Xia & Chen, NeurIPS 2024, arXiv 2405.14734)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.errors import check
from assay.objectives.preference import Beta, PairScores, PreferenceObjective
from assay.registry import register


def simpo_loss(chosen_mean_logp: torch.Tensor, rejected_mean_logp: torch.Tensor, beta: Beta, gamma: float) -> torch.Tensor:
    """SimPO Eq. 6 (equation number not checked against the PDF): ℓ = -log σ(β·(lp(y_w)/|y_w| - lp(y_l)/|y_l|) - γ)."""
    return F.softplus(-(beta * (chosen_mean_logp - rejected_mean_logp) - gamma))


@register("objective", "simpo")
@dataclass
class SimPO(PreferenceObjective):
    """SimPO: reference-free, length-normalised margin with a target γ (Meng, Xia & Chen, NeurIPS 2024, arXiv 2405.14734).

    ℓ = -log σ(β·(lp(y_w)/|y_w| - lp(y_l)/|y_l|) - γ) (Eq. 6, number not checked). Symbols → fields: β → ``beta``,
    γ → ``gamma``. Defaults: the authors' Mistral-7B-Base config (β = 2.0, γ = 1.6).
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Meng, Xia & Chen 2024, SimPO: Simple Preference Optimization with a Reference-Free Reward (NeurIPS 2024)",
        arxiv="2405.14734",
        code="princeton-nlp/SimPO: training_configs/*.yaml (default values only, per the research note); the trainer's loss was not "
             "checked line by line; the loss is checked against huggingface/trl v1.16.0: trl/experimental/cpo/cpo_trainer.py "
             "(CPOTrainer.cpo_loss, loss_type='simpo')",
        defaults={
            "beta": "2.0 (authors' configs: 2.0 for Mistral-7B-Base, 2.5 for Llama-3-8B-Instruct): follows the Mistral-Base config",
            "gamma": "1.6 (Mistral-7B-Base config 1.6; Llama-3-8B-Instruct γ/β = 0.55): follows the Mistral-Base config",
        },
        deviations=(
            "Equation number (Eq. 6) not checked against the PDF.",
            "The configs' learning rate (3e-7 / 1e-6), one epoch, cosine schedule and 10% warm-up are run settings (optim.*), not "
            "this option's.",
        ),
        checked="tests/unit/objectives/test_objectives.py: hand-derived value; tests/unit/objectives/test_trl_parity.py: against TRL "
                "1.16's CPOTrainer.cpo_loss (loss_type='simpo') to float rounding",
        notes="Reference-free: no reference log-probs are computed.",
    )

    name: str = "simpo"
    beta: float = 2.0
    """β: scale of the length-normalised reward r = β·lp(y)/|y|."""
    gamma: float = 1.6
    """γ: target reward margin (≥ 0)."""

    def __post_init__(self) -> None:
        check(self.beta > 0, "objective.beta", self.beta, "must be > 0")
        check(self.gamma >= 0, "objective.gamma", self.gamma, "must be >= 0")
        super().__post_init__()

    @property
    def base_beta(self) -> Optional[float]:
        return self.beta

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        return simpo_loss(s.policy_chosen / s.chosen_tokens, s.policy_rejected / s.rejected_tokens, beta, self.gamma)

    def rewards(self, s: PairScores, beta: Beta) -> tuple[torch.Tensor, torch.Tensor]:
        """SimPO's implicit reward r = β·lp(y)/|y|."""
        return (beta * s.policy_chosen / s.chosen_tokens).detach(), (beta * s.policy_rejected / s.rejected_tokens).detach()
