"""Modifiers of any pairwise loss, set as fields of the objective rather than chosen as options:
LD-DPO's length desensitisation (``objective.ld_alpha``) and WPO's pair weights (``objective.wpo``).
Their method cards live here (``assay-list objective/modifier <name>``); each class names the
objective fields it governs, and the code is in ``assay.objectives.preference`` and ``logps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from assay.cards import MethodCard

LD_TRL = "huggingface/trl v1.16.0: trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss and compute_ref_log_probs, ld_alpha)"


@dataclass
class LDDPO:
    """LD-DPO: objective.ld_alpha=α weighs each response's tokens past the shorter response's length by α (Liu et al. 2024, arXiv 2409.06411)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Liu et al. 2024, Length Desensitization in Direct Preference Optimization",
        arxiv="2409.06411",
        code=LD_TRL,
        defaults={"ld_alpha": "null: off (TRL's default None). The paper tunes α per model (values not checked); TRL requires it in [0, 1]"},
        deviations=(
            "The shared part is the first min(|y_w|, |y_l|) response tokens, as TRL computes it; the paper's own decomposition "
            "was not re-read.",
            "The reference's head log-probs are precomputed and cached (as the log-prob of the response cut to the shared "
            "length, the same value for a causal model) instead of a live reference forward pass.",
        ),
        checked="tests/unit/objectives/test_trl_parity.py: the loss of a tiny model's batch, both layouts, against TRL 1.16's "
                "DPOTrainer._compute_loss with ld_alpha on the same model (its own fused LM head)",
        notes="Applies to every pairwise loss (the policy's log-probs, and the reference's where the loss has one): "
              "assay-train objective=dpo objective.ld_alpha=0.5 ...",
    )

    name: str = "ld_dpo"
    ld_alpha: Optional[float] = None
    """The objective's ``ld_alpha`` (α in [0, 1]; null: off)."""


@dataclass
class WPO:
    """WPO: objective.wpo=true weighs each pair's loss by the policy's length-normalised probability of both responses (Zhou et al. 2024, arXiv 2406.11827)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Zhou et al. 2024, WPO: Enhancing RLHF with Weighted Preference Optimization (EMNLP 2024)",
        arxiv="2406.11827",
        code="huggingface/trl v1.16.0: trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss, use_weighting) and "
             "trl/kernels/chunked_logprob.py (log_sum_sq_probs)",
        defaults={"wpo": "false: off (TRL's use_weighting default)"},
        deviations=(
            "The weight is TRL's Eq. 2 form: exp of the mean over response tokens of log p(y_t) - log Σ_v p(v)² (the "
            "'aligned' probability), product over the pair's two responses, detached; the paper's variants were not re-read.",
            "Off-policy data as it is: WPO's on-policy sampling of the pairs is a data choice, not part of the loss.",
        ),
        checked="tests/unit/objectives/test_trl_parity.py: the loss of a tiny model's batch, both layouts, against TRL 1.16's "
                "DPOTrainer._compute_loss with use_weighting on the same model (its own fused LM head)",
        notes="Applies to every pairwise loss except AOT's (refused, as TRL does): assay-train objective=dpo objective.wpo=true ... "
              "The weight of each pair is recorded as wpo_weight.",
    )

    name: str = "wpo"
    wpo: bool = False
    """The objective's ``wpo``."""


MODIFIERS = {"ld_dpo": LDDPO, "wpo": WPO}
"""Method registry ``objective/modifier`` (listed by ``assay.catalog``)."""
