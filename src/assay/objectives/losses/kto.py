"""KTO: Kahneman-Tversky Optimization (Ethayarajh et al., ICML 2024, arXiv 2402.01306), on unpaired data.

Each row is one completion y of a prompt x labelled desirable or undesirable (``data.format=unpaired``).
With the log-ratio ρ = log π(y|x) - log π_ref(y|x) and the reference point z (Eq. 7's z_0), the
per-row loss is

    desirable:    λ_D · (1 - σ(β·(ρ - z)))
    undesirable:  λ_U · (1 - σ(β·(z - ρ)))

z estimates KL(π‖π_ref) from mismatched pairs: the batch's completions rotated by one against its
prompts, (x_1, y_n), (x_2, y_1), ... (built with the data, ``assay.data.collate.with_kl_completions``);
z = max(0, mean over the batch of log π(y'|x) - log π_ref(y'|x)), averaged over ranks, no gradient
(the paper's §4.1 and TRL's KTOTrainer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from assay.lazy import torch

from assay.cards import MethodCard
from assay.errors import check
from assay.objectives.base import ObjectiveConfig, ObjectiveOutput
from assay.objectives.logps import sequence_logps
from assay.registry import register

KTO_CODE = ("huggingface/trl v1.16.0: trl/trainer/kto_trainer.py (KTOTrainer._compute_loss, loss_type='kto'; the mismatched "
            "completions of KTOTrainer._prepare_dataset); ContextualAI/HALOs (the authors' code) not checked")


def reference_point(policy_kl: torch.Tensor, ref_kl: torch.Tensor) -> torch.Tensor:
    """z = max(0, mean_i [log π(y'_i|x_i) - log π_ref(y'_i|x_i)]) over the mismatched pairs, averaged over
    ranks in a run of several processes (TRL: ``gather_for_metrics(kl).mean().clamp(min=0)``), detached."""
    kl = (policy_kl - ref_kl).mean().detach()
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        kl = kl.clone()
        torch.distributed.all_reduce(kl)
        kl = kl / torch.distributed.get_world_size()
    return kl.clamp(min=0)


def kto_loss(logratio: torch.Tensor, desirable: torch.Tensor, z: torch.Tensor, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """[B] Eq. 7 of the paper (TRL's ``loss_type='kto'``): λ_D(1 - σ(β(ρ - z))) for desirable rows,
    λ_U(1 - σ(β(z - ρ))) for undesirable ones. ``desirable`` [B] is the bool label."""
    desirable = desirable.to(torch.bool)
    chosen = desirable_weight * (1 - torch.sigmoid(beta * (logratio - z)))
    rejected = undesirable_weight * (1 - torch.sigmoid(beta * (z - logratio)))
    return torch.where(desirable, chosen, rejected)


@register("objective", "kto")
@dataclass
class KTO(ObjectiveConfig):
    """KTO on unpaired desirable / undesirable completions (Ethayarajh et al., ICML 2024, arXiv 2402.01306).

    ℓ = λ_D(1 - σ(β(ρ - z))) (desirable), λ_U(1 - σ(β(z - ρ))) (undesirable), z the batch's reference KL.
    Symbols → fields: β → ``beta``, λ_D → ``desirable_weight``, λ_U → ``undesirable_weight``.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic Optimization (ICML 2024)",
        arxiv="2402.01306",
        code=KTO_CODE,
        defaults={
            "beta": "0.1 (paper §4.2 and TRL's KTOConfig default): follows",
            "desirable_weight": "1.0 (TRL's default; the paper asks for λ_D·n_D / (λ_U·n_U) in [1, 4/3]): follows TRL",
            "undesirable_weight": "1.0 (TRL's default): follows TRL",
        },
        deviations=(
            "Reference log-probs, of each completion and of its mismatched (KL) completion, are precomputed once before "
            "training (TRL's precompute_ref_log_probs) instead of a live reference pass: the same values for a frozen reference.",
            "The mismatched completions are fixed when the data is tokenized (rotated by one within runs of data.batch_size rows "
            "in the data's order, as TRL does), so with a shuffled order the KL pairs of a batch come from other rows than the "
            "batch's own (also true of TRL with its shuffling sampler); each is an unrelated completion, which is what z needs.",
            "TRL warns when λ_D·n_D / (λ_U·n_U) is outside [1, 4/3]; assay does not check the balance.",
        ),
        checked="tests/unit/objectives/test_kto.py: the loss and the reference point by hand (z clamped at 0 after the mean over "
                "ranks, no gradient), the unpaired data (labels, pairs unpaired on the fly, mismatched completions, their reference "
                "log-probs from the cache); the loss and z against "
                "TRL 1.16's own KTOTrainer._compute_loss on random inputs and edge cases, to float rounding; "
                "tests/integration/test_unpaired_runs.py: short runs on a JSONL file of unpaired rows and on the skills pairs unpaired",
        notes="TRL's batch loss is the mean over the batch's rows of the weighted per-row losses: assay's mean aggregator. "
              "The per-row records hold ρ (logratio), the reward β·ρ, z (kl) and the label.",
    )

    name: str = "kto"
    beta: float = 0.1
    """β: scale of the log-ratio in the value function (paper and TRL default 0.1), > 0."""
    desirable_weight: float = 1.0
    """λ_D: weight of the desirable rows' losses (TRL's ``desirable_weight``), > 0."""
    undesirable_weight: float = 1.0
    """λ_U: weight of the undesirable rows' losses (TRL's ``undesirable_weight``), > 0."""

    def __post_init__(self) -> None:
        check(self.beta > 0, "objective.beta", self.beta, "must be > 0")
        check(self.desirable_weight > 0, "objective.desirable_weight", self.desirable_weight, "must be > 0")
        check(self.undesirable_weight > 0, "objective.undesirable_weight", self.undesirable_weight, "must be > 0")
        super().__post_init__()
        check(self.controller.plain, "objective/controller", self.controller.name,
              "objective=kto has no pairwise margin for a controller to adapt β from; use objective/controller=none")

    @property
    def data_format(self) -> str:
        return "unpaired"

    @property
    def needs_reference(self) -> bool:
        return True

    def compute(self, model: torch.nn.Module, batch: dict, training: bool = False, controller: Optional[torch.nn.Module] = None) -> ObjectiveOutput:
        lp = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        with torch.no_grad():  # the reference point carries no gradient (TRL scores the KL sequences under no_grad)
            kl_lp = sequence_logps(model, batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_labels"]).sum
        ref = batch["ref_logps"].to(lp.sum.dtype)
        z = reference_point(kl_lp, batch["ref_KL_logps"].to(lp.sum.dtype))
        return self.from_logps(lp.sum, ref, batch["label"], z, weight=batch.get("weight"))

    def from_logps(self, policy: torch.Tensor, ref: torch.Tensor, label: torch.Tensor, z: torch.Tensor,
                   weight: Optional[torch.Tensor] = None) -> ObjectiveOutput:
        """Loss and per-row metrics from summed log-probs and the reference point (the model-free half of ``compute``)."""
        logratio = policy - ref
        desirable = label.to(device=policy.device, dtype=torch.bool)
        loss = kto_loss(logratio, desirable, z, self.beta, self.desirable_weight, self.undesirable_weight)
        n = policy.shape[0]
        reward = self.beta * logratio.detach()
        # the model's probability of the label, σ(±β(ρ - z)): the dynamics' confidence for unpaired rows
        signed = torch.where(desirable, reward - self.beta * z, self.beta * z - reward)
        metrics = {
            "logp": policy.detach(), "logratio": logratio.detach(), "reward": reward, "kl": z.expand(n).to(policy.dtype),
            "label": desirable.to(policy.dtype), "confidence": torch.sigmoid(signed), "label_acc": (signed > 0).to(policy.dtype),
        }
        return ObjectiveOutput(loss=loss, metrics=metrics, weight=weight)
