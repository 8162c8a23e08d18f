"""RHO-1's Selective Language Modeling (Lin et al., NeurIPS 2024, arXiv 2404.07965): train on the tokens
whose loss is high relative to a reference model.

Each completion token x_i gets the excess loss L_Δ(x_i) = L_θ(x_i) - L_ref(x_i) (Eq. 2;
L = -log p, the policy's loss now, the reference's precomputed and cached); the tokens of the batch
are ranked by it and the top k% kept (I_k%). The loss is the mean NLL over the kept tokens
(Eq. 3): L_SLM = -1/(N·k%) Σ_i I_k%(x_i) log P(x_i; θ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

from assay.lazy import torch

from assay.cards import MethodCard
from assay.errors import check
from assay.objectives.base import ObjectiveConfig, ObjectiveOutput
from assay.objectives.logps import sequence_logps
from assay.registry import register


def kept_count(n_tokens: int, keep_ratio: float) -> int:
    """k = ⌈keep_ratio · N⌉ of the batch's N tokens (at least one where there are any)."""
    return min(n_tokens, max(1, math.ceil(keep_ratio * n_tokens - 1e-9))) if n_tokens > 0 else 0


def select_tokens(excess: torch.Tensor, mask: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """[B, T] bool: the ⌈keep_ratio·N⌉ tokens of the batch (``mask`` True, N of them) with the highest
    excess loss ``excess`` (I_k% of Eq. 3, ranked over the whole batch as the paper does)."""
    flat = excess.detach().masked_fill(~mask, float("-inf")).flatten()
    kept = torch.zeros_like(flat, dtype=torch.bool)
    kept[torch.topk(flat, kept_count(int(mask.sum()), keep_ratio)).indices] = True
    return kept.view_as(mask) & mask


def slm_loss(token_logps: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """[B] per-sample losses whose mean is Eq. 3's -Σ_kept log p / K (K kept tokens in the batch): sample
    b's share, B · (-Σ_{kept in b} log p) / K."""
    total = kept.sum().clamp(min=1)
    return -(token_logps * kept).sum(-1) * kept.shape[0] / total


@register("objective", "rho1")
@dataclass
class Rho1(ObjectiveConfig):
    """RHO-1's Selective Language Modeling: NLL on the batch's top-k% tokens by excess loss over a reference.

    Lin et al., NeurIPS 2024, arXiv 2404.07965, Eq. 3. Symbols → fields: k% → ``keep_ratio``.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Lin et al. 2024, Rho-1: Not All Tokens Are What You Need (NeurIPS 2024)",
        arxiv="2404.07965",
        code="microsoft/rho: not checked (its released code evaluates the models; the token selection follows the paper's "
             "Eq. 2-3 and §2.3: tokens of a batch ranked by excess loss, the top k% kept)",
        defaults={
            "keep_ratio": "0.6 (the paper's k% for Rho-1 1B on math, 70% for 7B; §3.1, ablated in §3.5): follows",
        },
        deviations=(
            "The reference's per-token log-probs are precomputed once before training and cached (the paper scores with the "
            "reference model as training goes): the same values for a frozen reference.",
            "objective.reference_from=null (the default) takes the weights training starts from as the reference, so at the first "
            "step every excess loss is 0 and later the selection keeps the tokens whose loss rose most since the start: not the "
            "paper's recipe, whose reference is trained on curated high-quality data. The paper's recipe is "
            "objective.reference_from=<a run trained on such data> (e.g. objective=sft on the clean subset); its tokenizer must be "
            "the policy's.",
            "The tokens are ranked within each device's batch (the paper ranks the tokens of a batch), not across ranks.",
            "The loss is on completion tokens only (the prompt is not trained on, as in assay's SFT); the paper pretrains on "
            "whole documents.",
        ),
        checked="tests/unit/objectives/test_rho1.py: the kept tokens and the masked mean loss of a small batch by hand, no gradient "
                "through the selection, the per-token reference log-probs from the token cache against a direct pass (and their sum "
                "against the sequence log-prob DPO caches), the token cache's shards; "
                "tests/integration/test_token_selection_run.py: a short run against a reference trained first (an SFT run), "
                "recording each sample's share of kept tokens",
        notes="An SFT loss of its own (objective=rho1) rather than a field of objective=sft: it needs a reference model, which "
              "plain SFT does not, and it changes which tokens the likelihood covers, not a reweighting of a pairwise loss as "
              "the objective/modifier fields (ld_alpha, wpo) are. It composes with any data mixture, selection and ordering "
              "(data.format=sft). Records per sample: kept_share (share of its completion tokens kept), excess (its mean excess "
              "loss), nll (its plain mean NLL, comparable with objective=sft's loss).",
    )

    name: str = "rho1"
    keep_ratio: float = 0.6
    """k%: share of the batch's completion tokens trained on, in (0, 1] (the paper's 60%; 1 is SFT with
    the batch's token-level mean)."""
    reference_from: Optional[str] = None
    """The reference model: an earlier run's directory whose final weights score every token (the
    paper's reference, trained on curated high-quality data, e.g. an ``objective=sft`` run on the
    clean subset; its tokenizer must be this run's). null: the weights this run starts from, which is
    not the paper's recipe (every excess loss is 0 at the first step)."""

    def __post_init__(self) -> None:
        check(0.0 < self.keep_ratio <= 1.0, "objective.keep_ratio", self.keep_ratio, "must be in (0, 1]")
        if self.reference_from is not None:
            from assay.models.build import check_run_dir

            check_run_dir(self.reference_from, "objective.reference_from")
        super().__post_init__()
        check(self.controller.plain, "objective/controller", self.controller.name,
              "objective=rho1 has no pairwise margin for a controller to adapt β from; use objective/controller=none")

    @property
    def data_format(self) -> str:
        return "sft"

    @property
    def needs_reference(self) -> bool:
        return True

    def reference_model(self, policy: torch.nn.Module, tokenizer) -> torch.nn.Module:
        """The model whose per-token log-probs are the reference's: ``reference_from``'s final weights
        (in the policy's dtype), or the policy as it starts."""
        if self.reference_from is None:
            return policy
        from pathlib import Path

        from assay.models.build import load_run_model

        run = Path(self.reference_from).expanduser()
        model, theirs = load_run_model("objective.reference_from", self.reference_from, run, next(policy.parameters()).dtype)
        check(theirs.get_vocab() == tokenizer.get_vocab(), "objective.reference_from", self.reference_from,
              "has another tokenizer than this run's policy: the token log-probs would not be of the same tokens "
              "(train the reference with the same model and data settings, or start the policy from a run that shares its tokenizer)")
        return model.eval()

    def compute(self, model: torch.nn.Module, batch: dict, training: bool = False, controller: Optional[torch.nn.Module] = None) -> ObjectiveOutput:
        lp = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        return self.from_token_logps(lp.token_logps, batch["ref_token_logps"].to(lp.token_logps), lp.mask,
                                     metrics={"confidence": lp.mean_prob, "token_acc": lp.token_acc, "correct": lp.correct},
                                     weight=batch.get("weight"))

    def from_token_logps(self, token_logps: torch.Tensor, ref_token_logps: torch.Tensor, mask: torch.Tensor,
                         metrics: Optional[dict] = None, weight: Optional[torch.Tensor] = None) -> ObjectiveOutput:
        """Loss and per-sample metrics from per-token log-probs [B, T] (the model-free half of ``compute``)."""
        excess = (ref_token_logps - token_logps).detach() * mask  # L_θ - L_ref = -log p + log p_ref
        kept = select_tokens(excess, mask, self.keep_ratio)
        count = mask.sum(-1).clamp(min=1)
        out = dict(metrics or {})
        out.update(kept_share=kept.sum(-1) / count, excess=excess.sum(-1) / count, nll=-(token_logps * mask).sum(-1).detach() / count)
        return ObjectiveOutput(loss=slm_loss(token_logps, kept), metrics={k: v.detach() for k, v in out.items()},
                               token_logps=token_logps, token_mask=kept, weight=weight)
