"""Modifiers of any pairwise loss, set as fields of the objective rather than chosen as options:
LD-DPO's length desensitisation (``objective.ld_alpha``), WPO's pair weights (``objective.wpo``) and
TR-DPO's live reference (``objective.ref_sync``, reference-based losses).
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
        paper="Zhou et al. 2024, WPO: Enhancing RLHF with Weighted Preference Optimization",
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


@dataclass
class TRDPO:
    """TR-DPO: objective.ref_sync=soft|hard keeps a live reference that follows the policy every ref_sync_steps steps (Gorbatovski et al. 2024, arXiv 2404.09656)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Gorbatovski et al. 2024, Learn Your Reference Model for Real Good Alignment",
        arxiv="2404.09656",
        code="huggingface/trl v1.16.0: trl/trainer/callbacks.py (SyncRefModelCallback.sync_target_model, on_step_end) with "
             "DPOConfig's sync_ref_model, ref_model_mixup_alpha, ref_model_sync_steps",
        defaults={
            "ref_sync": "none: off (TRL's sync_ref_model=False)",
            "ref_sync_alpha": "0.6 (TRL's ref_model_mixup_alpha default): follows TRL; the paper's best α per task was not re-read",
            "ref_sync_steps": "512 (TRL's ref_model_sync_steps default): follows TRL; the paper's best τ per task was not re-read",
        },
        deviations=(
            "The soft update happens every ref_sync_steps steps, as TRL's callback does (ref_sync_steps=1 mixes at every step); "
            "hard is the same update with α = 1.",
            "Parameters are mixed, buffers are not (the reference keeps its own buffers), as in TRL.",
            "Refused with parameter- or optimizer-sharding strategies (FSDP, DeepSpeed) and with LoRA (mixing adapter factors is "
            "not mixing their products; TRL refuses PEFT too).",
        ),
        checked="tests/unit/objectives/test_tr_dpo.py: the sync against TRL 1.16's SyncRefModelCallback.sync_target_model, its "
                "schedule (every τ steps, once per step, not before the first), the live log-probs equal to the cached ones of the "
                "same weights, and that the reference and its last sync travel in a checkpoint",
        notes="Needs a second copy of the model in memory and in every checkpoint, and a reference forward per batch (no cache). "
              "Applies to every reference-based loss: assay-train objective=dpo objective.ref_sync=soft objective.ref_sync_steps=1 ...",
    )

    name: str = "tr_dpo"
    ref_sync: str = "none"
    """The objective's ``ref_sync`` (``none``, ``soft``, ``hard``)."""
    ref_sync_alpha: float = 0.6
    """The objective's ``ref_sync_alpha``."""
    ref_sync_steps: int = 512
    """The objective's ``ref_sync_steps``."""


MODIFIERS = {"ld_dpo": LDDPO, "wpo": WPO, "tr_dpo": TRDPO}
"""Method registry ``objective/modifier`` (listed by ``assay.catalog``)."""
