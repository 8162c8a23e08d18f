"""Per-sequence log-probabilities of the labelled (response) tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from assay.lazy import F, torch

from assay.data.collate import IGNORE, PROMPT, pack_first_fit
from assay.errors import UserError
from assay.objectives.lm_head import TargetLogps, head_parts, target_logps


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
                   wpo: bool = False, pack_factor: float = 0.0) -> SequenceLogps:
    """Log-probs of the labelled tokens of a right-padded batch [N, T], one sequence per row.

    ``pack_factor`` > 0 computes them with the sequences packed whole into rows of at most
    max(1, pack_factor) times the longest sequence (``packed_layout``: padding-free packing, each
    sequence attending only to itself and keeping its own positions), so the forward and backward see
    the batch's real tokens plus little padding. The result is the same, to float rounding, in the same
    [N]/[N, T-1] shapes; the model's attention must take a custom 4D mask (sdpa or eager)."""
    targets = labels[:, 1:]
    mask = targets != IGNORE
    rows, cols = mask.nonzero(as_tuple=True)  # target (row, column): predicted by the logits at that column
    if pack_factor > 0:
        layout = packed_layout(attention_mask, pack_factor)
        allowed = model_attention_mask(model, shared_prompt_mask(layout["segment"], layout["segment"].clamp(max=0)), "objective.pack_factor", pack_factor)
        inputs = dict(input_ids=input_ids.flatten()[layout["source"]].view_as(layout["segment"]), attention_mask=allowed,
                      position_ids=layout["position_ids"])
        index = layout["start"][rows] + cols
    else:
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask)
        index = rows * input_ids.shape[1] + cols
    scored = scored_logps(model, inputs, index, targets[rows, cols], hits=True, sum_sq=wpo)
    token_logps = scored.logps.new_zeros(targets.shape).index_put((rows, cols), scored.logps)
    count = mask.sum(-1).clamp(min=1)
    with torch.no_grad():
        hits = token_logps.new_zeros(targets.shape).index_put((rows, cols), scored.hits.to(token_logps.dtype)).sum(-1)
        wpo_mean = None
        if wpo:
            aligned = scored.logps - scored.log_sum_sq
            wpo_mean = aligned.new_zeros(targets.shape).index_put((rows, cols), aligned).sum(-1) / count
    return SequenceLogps(
        sum=token_logps.sum(-1),
        count=count,
        mean_prob=(token_logps.exp() * mask).sum(-1) / count,
        token_acc=hits / count,
        correct=(hits == mask.sum(-1)).float(),
        token_logps=token_logps,
        mask=mask,
        wpo_mean=wpo_mean,
    )


FUSED_HEAD_ABOVE = 128 * 2**20
"""Scored positions whose float32 logits would exceed this many bytes go through the chunked head
(``lm_head.target_logps``: memory O(chunk·V), one more head matmul); fewer take the plain head on
the scored positions, which is faster (benchmarks/README.md, "Target log-probs through the LM head")."""


def scored_logps(model: torch.nn.Module, inputs: dict, index: torch.Tensor, targets: torch.Tensor, hits: bool = False,
                 sum_sq: bool = False) -> TargetLogps:
    """log p of ``targets`` [M] predicted at the flat positions ``index`` (into rows·T) of the model's
    output on ``inputs``. Only those positions reach the lm head where the model splits into a body
    and a plain linear head (``lm_head.head_parts``); the prompt and padding positions get no logits."""
    parts = head_parts(model)
    if parts is None:
        logits = model(**inputs, use_cache=False).logits
        return logps_from_logits(logits.reshape(-1, logits.size(-1))[index].float(), targets, hits, sum_sq)
    body, weight = parts
    hidden = body(**inputs, use_cache=False).last_hidden_state
    hidden = hidden.reshape(-1, hidden.size(-1))[index]
    if 4 * targets.numel() * weight.shape[0] > FUSED_HEAD_ABOVE:
        return target_logps(hidden, weight, targets, want_hits=hits, want_sum_sq=sum_sq)
    return logps_from_logits(F.linear(hidden, weight).float(), targets, hits, sum_sq)


def logps_from_logits(logits: torch.Tensor, targets: torch.Tensor, hits: bool, sum_sq: bool) -> TargetLogps:
    out = TargetLogps(-F.cross_entropy(logits, targets, reduction="none"))
    with torch.no_grad():
        out.hits = (logits.argmax(-1) == targets) if hits else None
        out.log_sum_sq = log_sum_sq_probs(logits) if sum_sq else None
    return out


def packed_layout(attention_mask: torch.Tensor, pack_factor: float) -> dict[str, torch.Tensor]:
    """Where the sequences of a right-padded batch [N, T] go when packed whole (first fit, longest
    first) into rows of at most max(1, ``pack_factor``) times the longest sequence.

    Returns, for ``n`` packed rows of width ``W``: ``source`` [n·W], the flat index (into N·T) of the
    token each packed slot holds (a padding slot reads the first row's last column, any token: no real
    token attends to it, and it predicts none); ``position_ids`` [n, W], each sequence's own
    positions 0..L-1; ``segment`` [n, W], the sequence a slot belongs to (-1 on padding); and
    ``start`` [N], the flat index (into n·W) of each sequence's first token, so column j of sequence i
    sits at ``start[i] + j``."""
    n_seq, t = attention_mask.shape
    lengths = attention_mask.sum(-1).tolist()
    check_right_padded(attention_mask, lengths)
    longest = max(max(lengths), 1)
    bins = pack_first_fit(lengths, max(longest, int(pack_factor * longest)))
    width = max(max(sum(lengths[k] for k in b) for b in bins), 1)
    source = torch.full((len(bins) * width,), t - 1, dtype=torch.long)  # padding slots read the last column
    position = torch.zeros(len(bins) * width, dtype=torch.long)
    segment = torch.full((len(bins) * width,), -1, dtype=torch.long)
    start = torch.zeros(n_seq, dtype=torch.long)
    for row, members in enumerate(bins):
        offset = row * width
        for k in members:
            span = torch.arange(lengths[k])
            source[offset:offset + lengths[k]] = k * t + span
            position[offset:offset + lengths[k]] = span
            segment[offset:offset + lengths[k]] = k
            start[k] = offset
            offset += lengths[k]
    device = attention_mask.device
    return {"source": source.to(device), "position_ids": position.view(-1, width).to(device),
            "segment": segment.view(-1, width).to(device), "start": start.to(device)}


def check_right_padded(attention_mask: torch.Tensor, lengths: list[int]) -> None:
    expected = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None] < torch.tensor(lengths, device=attention_mask.device)[:, None]
    if not torch.equal(attention_mask.bool(), expected):
        raise ValueError("packing needs right-padded rows (the attention mask a prefix of ones in every row)")


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


def model_attention_mask(model: torch.nn.Module, allowed: torch.Tensor, setting: str = "objective.share_prompt", value: object = True) -> torch.Tensor:
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
    off = "objective.share_prompt=false" if setting == "objective.share_prompt" else f"{setting}=0"
    raise UserError(
        setting, value,
        f"needs a model whose attention takes a custom 4D mask (attn_implementation sdpa or eager), this one uses {impl!r}; set {off}",
    )


def shared_prompt_logps(model: torch.nn.Module, batch: dict, heads: bool = False, wpo: bool = False) -> SequenceLogps:
    """[2B] log-probs of a shared-prompt batch (``collate.shared_prompt_layout``): chosen responses
    first, then rejected ones, as ``sequence_logps`` returns them for the two-sequence layout."""
    mask = model_attention_mask(model, shared_prompt_mask(batch["segment"], batch["part"]))
    scored = scored_logps(model, dict(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"]),
                          batch["target_index"], batch["target_ids"], sum_sq=wpo)
    token_logps = scored.logps
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
            aligned = token_logps - scored.log_sum_sq
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
