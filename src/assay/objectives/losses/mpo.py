"""Weighted combinations of pairwise losses: MPO's mixed preference optimisation (Wang et al. 2024, arXiv 2411.10442).

The per-pair loss is Σ_k w_k·ℓ_k over the listed losses, each computed from the same scores with
the shared β, as TRL computes ``loss_type=[...]`` with ``loss_weights=[...]``. MPO itself is
DPO + BCO + the chosen response's NLL with weights 0.8, 0.2, 1.0 (TRL's example, the default here).
Any pairwise loss of ``objective`` can be listed; ``sft`` is the chosen response's per-token NLL
(TRL's ``sft`` loss type).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from assay.lazy import torch

from assay.cards import MethodCard
from assay.errors import check
from assay.objectives.preference import PRECOMPUTED_REFERENCE, SHARED_PROMPT, Beta, PairScores, PreferenceObjective, ReferenceObjective
from assay.registry import options, register

NLL = "sft"
"""The component name of the chosen response's per-token NLL, -lp(y_w)/|y_w| (TRL's ``sft`` loss type)."""


def component(name: str, beta: float) -> Any:
    """The pairwise loss ``name`` with its default fields and, for a reference-based loss, the shared β."""
    cls = options("objective").get(name)
    pairwise = sorted(k for k, c in options("objective").items() if issubclass(c, PreferenceObjective) and k != "mpo")
    check(cls is not None and issubclass(cls, PreferenceObjective) and name != "mpo", "objective.losses", name,
          f"each must be a pairwise loss, one of {[NLL, *pairwise]}")
    return cls(beta=beta) if issubclass(cls, ReferenceObjective) else cls()


@register("objective", "mpo")
@dataclass
class MPO(ReferenceObjective):
    """Weighted sum of pairwise losses, TRL's ``loss_type`` list with ``loss_weights`` (MPO: Wang et al. 2024, arXiv 2411.10442).

    ℓ = Σ_k w_k·ℓ_k(scores, β). Symbols → fields: the ℓ_k → ``losses``, the w_k → ``loss_weights``, β → ``beta``
    (shared by every reference-based loss; the others keep their own defaults).
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Wang et al. 2024, Enhancing the Reasoning Ability of Multimodal Large Language Models via Mixed Preference "
              "Optimization",
        arxiv="2411.10442",
        code="huggingface/trl v1.16.0: trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss, loss_type=[...] with loss_weights)",
        defaults={
            "losses": "[dpo, bco_pair, sft] (TRL's MPO example ['sigmoid', 'bco_pair', 'sft']): follows TRL",
            "loss_weights": "[0.8, 0.2, 1.0] (TRL's MPO example): follows TRL",
            "beta": "0.1 (TRL's beta default): follows TRL",
        },
        deviations=(
            "The sft component is each pair's per-token mean NLL of the chosen response, averaged over pairs; TRL's is the mean "
            "over every chosen token of the batch, so long responses weigh more there (the same when chosen lengths are equal).",
            "With objective.ld_alpha the sft component reads the desensitised log-probs; TRL's reads the plain per-token ones.",
            "Each component's other fields (ε, τ, ...) are its own defaults; TRL shares one label_smoothing across losses.",
            "bco_pair's reward shift is off inside a combination (as in TRL 1.16).",
            PRECOMPUTED_REFERENCE,
            SHARED_PROMPT,
        ),
        checked="tests/unit/objectives/test_trl_parity.py: MPO's combination (and others) against TRL 1.16's DPOTrainer._compute_loss "
                "with loss_type lists and loss_weights, to float rounding",
        notes="MPO's paper trains a multimodal model on its own MMPR data; this is the loss only.",
    )

    name: str = "mpo"
    losses: list[str] = field(default_factory=lambda: ["dpo", "bco_pair", NLL])
    """The pairwise losses to combine (options of ``objective``, or ``sft``: the chosen response's NLL)."""
    loss_weights: list[float] = field(default_factory=lambda: [0.8, 0.2, 1.0])
    """One weight per loss (TRL's ``loss_weights``)."""

    def __post_init__(self) -> None:
        check(len(self.losses) > 0, "objective.losses", list(self.losses), "must name at least one loss")
        check(len(self.loss_weights) == len(self.losses), "objective.loss_weights", list(self.loss_weights),
              f"must give one weight per loss ({len(self.losses)}: {list(self.losses)})")
        check(self.beta > 0, "objective.beta", self.beta, "must be > 0")
        self._parts = [None if n == NLL else component(str(n), self.beta) for n in self.losses]
        super().__post_init__()

    @property
    def sorts_batch(self) -> bool:  # type: ignore[override]
        return any(p is not None and p.sorts_batch for p in self._parts)

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        total = 0.0
        for weight, part in zip(self.loss_weights, self._parts):
            if part is None:
                loss = -s.policy_chosen / s.chosen_tokens
            else:
                loss = part.pair_loss(s, beta if isinstance(part, ReferenceObjective) else part.base_beta)
            total = total + float(weight) * loss
        return total
