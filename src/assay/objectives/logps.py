"""Per-sequence log-probabilities of the labelled (response) tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from assay.data.collate import IGNORE


@dataclass
class SequenceLogps:
    sum: torch.Tensor
    """[N] summed log p of response tokens."""
    count: torch.Tensor
    """[N] number of response tokens."""
    mean_prob: torch.Tensor
    """[N] mean probability of the gold response tokens (the dynamics' confidence for SFT)."""


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
    return SequenceLogps(
        sum=token_logps.sum(-1),
        count=count,
        mean_prob=(token_logps.exp() * mask).sum(-1) / count,
    )
