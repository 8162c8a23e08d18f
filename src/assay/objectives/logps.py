"""Per-sequence log-probabilities of the labelled (response) tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from assay.lazy import F, torch

from assay.data.collate import IGNORE, PROMPT
from assay.errors import UserError


@dataclass
class SequenceLogps:
    sum: torch.Tensor
    """[N] summed log p of response tokens."""
    count: torch.Tensor
    """[N] number of response tokens."""
    mean_prob: torch.Tensor
    """[N] mean probability of the gold response tokens (the dynamics' confidence for SFT)."""
    token_acc: Optional[torch.Tensor] = None
    """[N] share of response tokens that are the model's top-1 prediction (teacher forced)."""
    correct: Optional[torch.Tensor] = None
    """[N] 1.0 when every response token is the top-1 prediction: the response is what greedy
    decoding gives, the per-sample correctness of dataset cartography (Swayamdipta et al. 2020)
    and forgetting events (Toneva et al. 2019) for generated answers."""
    token_logps: Optional[torch.Tensor] = None
    """[N, T-1] log p of every target position (0 where masked), for per-token reweighting (DoReMi)."""
    mask: Optional[torch.Tensor] = None
    """[N, T-1] True at the response tokens ``token_logps`` counts."""


def sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> SequenceLogps:
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    targets = labels[:, 1:]
    mask = targets != IGNORE
    # log_softmax + gather, one token per position: the memory-light form of cross-entropy per token.
    token_logps = -F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.clamp(min=0).reshape(-1), reduction="none"
    ).view_as(targets)
    token_logps = token_logps * mask
    count = mask.sum(-1).clamp(min=1)
    with torch.no_grad():
        hits = ((logits.argmax(-1) == targets) & mask).sum(-1)
    return SequenceLogps(
        sum=token_logps.sum(-1),
        count=count,
        mean_prob=(token_logps.exp() * mask).sum(-1) / count,
        token_acc=hits.float() / count,
        correct=(hits == mask.sum(-1)).float(),
        token_logps=token_logps,
        mask=mask,
    )


def shared_prompt_mask(segment: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """[n, 1, T, T] boolean mask (True = may attend) of the shared-prompt layout.

    Query i sees key j when j ≤ i, both lie in the same pair's segment, and j is a prompt token or
    has i's role: chosen tokens see the prompt and earlier chosen tokens, rejected tokens the prompt
    and earlier rejected tokens, never the chosen ones (Wang et al. 2024, arXiv 2410.20305, Fig. 1).
    Padding sees earlier padding of its row only, so no softmax row is empty.
    """
    t = segment.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment.device).tril()
    same = segment[:, :, None] == segment[:, None, :]
    visible = (part[:, None, :] == PROMPT) | (part[:, None, :] == part[:, :, None])
    return (causal & same & visible)[:, None]


def model_attention_mask(model: torch.nn.Module, allowed: torch.Tensor) -> torch.Tensor:
    """``allowed`` in the form the model's attention takes as a custom 4D mask.

    transformers passes a 4D mask through unchanged (``masking_utils``): ``sdpa`` hands it to
    ``scaled_dot_product_attention``, which reads a boolean mask as "may attend"; ``eager`` adds it
    to the attention scores, so it needs 0 / a large negative value in the model's dtype.
    """
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl == "sdpa":
        return allowed
    if impl == "eager":
        dtype = model.get_input_embeddings().weight.dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
    raise UserError(
        "objective.share_prompt", True,
        f"needs a model whose attention takes a custom 4D mask (attn_implementation sdpa or eager), this one uses {impl!r}; "
        "set objective.share_prompt=false",
    )


def shared_prompt_logps(model: torch.nn.Module, batch: dict) -> SequenceLogps:
    """[2B] log-probs of a shared-prompt batch (``collate.shared_prompt_layout``): chosen responses
    first, then rejected ones, as ``sequence_logps`` returns them for the two-sequence layout."""
    mask = model_attention_mask(model, shared_prompt_mask(batch["segment"], batch["part"]))
    logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False).logits
    picked = logits.reshape(-1, logits.size(-1))[batch["target_index"]].float()
    token_logps = -F.cross_entropy(picked, batch["target_ids"], reduction="none")
    seq = batch["target_seq"]
    n = 2 * len(batch["ids"])
    total = token_logps.new_zeros(n).index_add(0, seq, token_logps)
    count = torch.bincount(seq, minlength=n).clamp(min=1)
    mean_prob = token_logps.new_zeros(n).index_add(0, seq, token_logps.exp()) / count
    return SequenceLogps(sum=total, count=count, mean_prob=mean_prob)


def pair_logps(model: torch.nn.Module, batch: dict) -> SequenceLogps:
    """[2B] log-probs (chosen responses, then rejected) of a preference batch in either layout."""
    if "target_index" in batch:
        return shared_prompt_logps(model, batch)
    return sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
