"""Forward passes of a causal LM over a dataset: right-padded ``prompt + response`` batches, one
batched forward, and one pooling of the last hidden state.

Every scorer that runs the model over the pool (losses, EL2N, pooled-hidden-state embeddings,
per-sample gradients, Hessian-vector products) reads its batches from here, so padding and masking
are the same everywhere: rows are right-padded, so with causal attention the real tokens never
attend to the padding and each row's outputs do not depend on the batch it is in.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np

from assay.data.collate import IGNORE
from assay.data.text import response_column
from assay.lazy import F, torch
from assay.run.progress import track

WEIGHTINGS = ("mean", "position")


def pad_rows(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int, with_prompt: bool = True, bos_id: Optional[int] = None) -> dict:
    """One right-padded batch of ``prompt + response`` rows: ``input_ids``, ``attention_mask`` and
    ``labels`` (the response tokens; IGNORE on the prompt and the padding). ``with_prompt=False``
    scores the response alone (after ``bos_id`` when the tokenizer has one)."""
    seqs, labels = [], []
    for p, r in zip(prompts, responses):
        prefix = list(p) if with_prompt else ([bos_id] if bos_id is not None else [])
        seqs.append(prefix + list(r))
        labels.append([IGNORE] * len(prefix) + list(r))
    t = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    label_t = torch.full((len(seqs), t), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        input_ids[i, : len(s)], label_t[i, : len(l)], mask[i, : len(s)] = torch.tensor(s, dtype=torch.long), torch.tensor(l, dtype=torch.long), 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_t}


def padded_batches(ds, pad_id: int, batch_size: int, with_prompt: bool = True, bos_id: Optional[int] = None, desc: str = "selection scoring") -> Iterator[dict]:
    """``pad_rows`` over a tokenized dataset (``prompt_ids`` and the response ids), ``batch_size`` rows
    at a time, with the pass's progress (``desc``, batches done, ETA) on the console."""
    col = f"{response_column(ds)}_ids"
    starts = range(0, len(ds), batch_size)
    for start in track(starts, desc, disable=len(ds) <= batch_size):
        rows = ds[start : start + batch_size]
        yield pad_rows(rows["prompt_ids"], rows[col], pad_id, with_prompt, bos_id)


class eval_mode:
    """The model in eval mode (no dropout: outputs are a function of the weights only), without
    gradients unless ``grad``; its mode is restored after."""

    def __init__(self, model, grad: bool = False):
        self.model, self.was_training = model, model.training
        self.grad = torch.enable_grad() if grad else torch.no_grad()

    def __enter__(self):
        self.model.eval()
        self.grad.__enter__()
        return self.model

    def __exit__(self, *exc):
        self.grad.__exit__(*exc)
        self.model.train(self.was_training)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def weights_digest(model) -> str:
    """sha256 over every tensor of the model's state (names and bytes): the key of every cache of a
    model's outputs (reference log-probs, on-policy samples)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def generate_texts(model, tokenizer, input_ids, attention_mask, max_new_tokens: int, temperature: Optional[float] = None,
                   num_return_sequences: int = 1) -> list[str]:
    """Decoded continuations of left-padded prompts: greedy (``temperature`` None: the evaluation's
    answers) or sampled at ``temperature``, ``num_return_sequences`` per prompt (prompt-major order),
    from the global torch generator. Special tokens are dropped from the text."""
    sampled = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature is not None else {"do_sample": False}
    generated = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_return_sequences,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **sampled,
    )
    return tokenizer.batch_decode(generated[:, input_ids.size(1):], skip_special_tokens=True)


def forward(model, batch: dict, hidden_states: bool = False):
    """The batched forward of one padded batch (moved to the model's device), without a KV cache."""
    device = model_device(model)
    return model(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
        output_hidden_states=hidden_states, use_cache=False,
    )


def token_weights(batch: dict, weighting: str = "mean", response_only: bool = False) -> torch.Tensor:
    """[B, T] pooling weights: 1 per real token (``mean``) or its 1-based position t (``position``,
    SGPT's weighting as RDS+ uses it: later tokens have read more context). ``response_only`` keeps
    the response tokens, or the whole row when it has none."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, not {weighting!r}")
    keep = batch["attention_mask"].float()
    if response_only:
        response = (batch["labels"] != IGNORE).float()
        keep = torch.where(response.sum(1, keepdim=True) > 0, response, keep)
    if weighting == "position":
        keep = keep * torch.arange(1, keep.size(1) + 1, dtype=keep.dtype)
    return keep


def pool_hidden(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[B, H] weighted mean over tokens of a [B, T, H] hidden state (in float32)."""
    w = weights.to(hidden.device, torch.float32).unsqueeze(-1)
    return (hidden.float() * w).sum(1) / w.sum(1).clamp_min(1e-12)


def pooled_hidden_states(
    model, batches, weighting: str = "position", response_only: bool = False, normalize: bool = False
) -> np.ndarray:
    """[N, H] pooled last hidden states over ``batches`` (from ``padded_batches`` or ``pad_rows``),
    L2-normalised when ``normalize``."""
    out = []
    with eval_mode(model):
        for batch in batches:
            hidden = forward(model, batch, hidden_states=True).hidden_states[-1]
            pooled = pool_hidden(hidden, token_weights(batch, weighting, response_only))
            out.append((F.normalize(pooled, dim=-1) if normalize else pooled).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def embed_examples(model, ds, pad_id: int, batch_size: int) -> np.ndarray:
    """[N, H] position-weighted mean of the last hidden state (SGPT pooling, as RDS+ uses),
    L2-normalised: the embedding of a tokenized dataset that ``embed_sim``, ``kmeans_diverse`` and
    the ``quota`` selector's clusters read."""
    return pooled_hidden_states(model, padded_batches(ds, pad_id, batch_size, desc="embedding"), weighting="position", normalize=True)
