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
    head: Optional[torch.Tensor] = None
    """[2B] of a preference batch, asked for with ``heads``: the summed log p of each response's first
    min(|y_w|, |y_l|) tokens (LD-DPO's shared part; the shorter response's head is all of it)."""
    wpo_mean: Optional[torch.Tensor] = None
    """[N], asked for with ``wpo``: mean over the response tokens of log p(y_t) - log Σ_v p(v)², no
    gradient (WPO's log-weight of a response, Zhou et al. 2024, arXiv 2406.11827, Eq. 2)."""


def log_sum_sq_probs(logits: torch.Tensor) -> torch.Tensor:
    """log Σ_v p(v)² of each position's distribution p = softmax(logits), over the last dimension:
    logsumexp(2·z) - 2·logsumexp(z), exact at any logit scale."""
    z = logits.float()
    return torch.logsumexp(2.0 * z, dim=-1) - 2.0 * torch.logsumexp(z, dim=-1)


def sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                   wpo: bool = False) -> SequenceLogps:
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
        wpo_mean = (((token_logps - log_sum_sq_probs(logits)) * mask).sum(-1) / count) if wpo else None
    return SequenceLogps(
        sum=token_logps.sum(-1),
        count=count,
        mean_prob=(token_logps.exp() * mask).sum(-1) / count,
        token_acc=hits.float() / count,
        correct=(hits == mask.sum(-1)).float(),
        token_logps=token_logps,
        mask=mask,
        wpo_mean=wpo_mean,
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


def shared_prompt_logps(model: torch.nn.Module, batch: dict, heads: bool = False, wpo: bool = False) -> SequenceLogps:
    """[2B] log-probs of a shared-prompt batch (``collate.shared_prompt_layout``): chosen responses
    first, then rejected ones, as ``sequence_logps`` returns them for the two-sequence layout."""
    mask = model_attention_mask(model, shared_prompt_mask(batch["segment"], batch["part"]))
    logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False).logits
    picked = logits.reshape(-1, logits.size(-1))[batch["target_index"]].float()
    token_logps = -F.cross_entropy(picked, batch["target_ids"], reduction="none")
    seq = batch["target_seq"]
    n = 2 * len(batch["ids"])
    total = token_logps.new_zeros(n).index_add(0, seq, token_logps)
    tokens = torch.bincount(seq, minlength=n)
    count = tokens.clamp(min=1)
    mean_prob = token_logps.new_zeros(n).index_add(0, seq, token_logps.exp()) / count
    out = SequenceLogps(sum=total, count=count, mean_prob=mean_prob)
    if heads:
        # A response's scored tokens are contiguous and in order (collate.shared_prompt_layout): the
        # position of token i in its response is i minus the index of the response's first token, plus 1.
        index = torch.arange(seq.numel(), device=seq.device)
        first = torch.full((n,), seq.numel(), dtype=torch.long, device=seq.device).scatter_reduce(0, seq, index, "amin")
        out.head = head_sums(token_logps, seq, index - first[seq] + 1, tokens)
    if wpo:
        with torch.no_grad():
            aligned = token_logps - log_sum_sq_probs(picked)
            out.wpo_mean = aligned.new_zeros(n).index_add(0, seq, aligned) / count
    return out


def head_sums(token_logps: torch.Tensor, seq: torch.Tensor, position: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """[2B] Σ of the log-probs of each response's first k tokens, k = min(|y_w|, |y_l|) of its pair
    (LD-DPO's shared part, as TRL's ``ld_alpha`` computes it: the tokens at positions 1..k).

    ``token_logps``, ``seq``, ``position`` [N]: each scored token's log-prob, its response (chosen k,
    rejected B + k) and its 1-based position in the response; ``tokens`` [2B]: tokens per response."""
    chosen, rejected = tokens.chunk(2)
    shared = torch.minimum(chosen, rejected).repeat(2)
    inside = position <= shared[seq]
    return token_logps.new_zeros(tokens.numel()).index_add(0, seq, token_logps * inside)


def pair_logps(model: torch.nn.Module, batch: dict, heads: bool = False, wpo: bool = False) -> SequenceLogps:
    """[2B] log-probs (chosen responses, then rejected) of a preference batch in either layout;
    ``heads``: with each response's head sum (LD-DPO), ``wpo``: with WPO's mean aligned log-prob."""
    if "target_index" in batch:
        return shared_prompt_logps(model, batch, heads, wpo)
    lp = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"], wpo=wpo)
    if heads:
        rows, _ = lp.mask.nonzero(as_tuple=True)
        position = lp.mask.long().cumsum(-1)[lp.mask]
        lp.head = head_sums(lp.token_logps[lp.mask], rows, position, lp.mask.sum(-1))
    return lp
