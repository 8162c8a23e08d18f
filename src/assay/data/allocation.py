"""How a static mixture is realised: per-domain shares (of examples or tokens) -> integer counts
under the repetition caps -> the resampled pool, a pure, seeded function of the per-domain pool
sizes (repeated copies get the id ``<id>~<k>``)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from assay.data.weights import normalise_shares
from assay.errors import UserError
from assay.lazy import datasets


def tokens_per_domain(sources: list[str], lengths: Optional[np.ndarray]) -> dict[str, float]:
    """Tokens of each domain (``lengths``: tokens per row, aligned with ``sources``)."""
    if lengths is None:
        raise TypeError("a token mixture needs the token count of every training example")
    out: dict[str, float] = {}
    for s, n in zip(sources, np.asarray(lengths).tolist()):
        out[s] = out.get(s, 0.0) + float(n)
    return out


def apply_domain_weights(props: dict[str, float], weights: Optional[dict[str, float]]) -> dict[str, float]:
    """The data's per-domain weights (``data.sources.<d>.weight``) multiply the mixture's shares."""
    if not weights:
        return props
    out = {s: p * float(weights.get(s, 1.0)) for s, p in props.items()}
    if sum(out.values()) <= 0:
        raise UserError("data.sources.<domain>.weight", dict(weights), "every domain the mixture uses has weight 0; give at least one a weight > 0")
    return normalise_shares(out)


def allocate(props: dict[str, float], sizes: dict[str, int], total: Optional[int], max_rep) -> dict[str, int]:
    """Integer counts per domain proportional to ``props`` (largest-remainder rounding).

    ``max_rep``: the cap in epochs, a number or a function of the domain. Without a ``total``, the
    largest total is used for which no domain needs more than its cap of passes over its pool.
    """
    cap = max_rep if callable(max_rep) else (lambda s: float(max_rep))
    active = {s: p for s, p in props.items() if p > 0}
    if total is None:
        total = int(min(cap(s) * sizes[s] / p for s, p in active.items()))
    raw = {s: total * p for s, p in active.items()}
    counts = {s: int(math.floor(v)) for s, v in raw.items()}
    for s in sorted(raw, key=lambda s: raw[s] - counts[s], reverse=True)[: total - sum(counts.values())]:
        counts[s] += 1
    for s, c in counts.items():
        if c > cap(s) * sizes[s]:
            raise UserError(
                "mixture.num_examples",
                total,
                f"needs {c} examples from domain {s!r} which has {sizes[s]} ({c / sizes[s]:.2f} epochs, cap {cap(s):g}); "
                "lower it or raise mixture.max_repetition / mixture.max_epochs",
            )
    return counts


def allocate_tokens(props: dict[str, float], sizes: dict[str, int], tokens: dict[str, float], total_tokens: Optional[int],
                    cap, total_examples: Optional[int] = None) -> dict[str, int]:
    """Examples per domain so that the domains' *token* shares are ``props``: domain d gets
    T·p_d tokens, i.e. T·p_d / (tokens_d / n_d) examples (its mean example length). Without a
    total, the largest T for which no domain exceeds its cap of epochs over its tokens."""
    active = {s: p for s, p in props.items() if p > 0}
    if total_tokens is None and total_examples is not None:
        per_example = sum(p * sizes[s] / tokens[s] for s, p in active.items())  # examples per token of mixture
        total_tokens = int(total_examples / per_example)
    if total_tokens is None:
        total_tokens = int(min(cap(s) * tokens[s] / p for s, p in active.items()))
    counts = {}
    for s, p in active.items():
        want = total_tokens * p
        epochs = want / tokens[s]
        if epochs > cap(s) * (1 + 1e-9):
            raise UserError(
                "mixture.num_tokens",
                total_tokens,
                f"domain {s!r} would need {want:.0f} tokens = {epochs:.2f} epochs of its {tokens[s]:.0f}, "
                f"{epochs / cap(s):.2f}x its cap of {cap(s):g} epochs; lower the total or its weight, or raise mixture.max_epochs.{s}",
            )
        counts[s] = min(int(round(want * sizes[s] / tokens[s])), int(math.floor(cap(s) * sizes[s])))
    return counts


def resample(train: datasets.Dataset, sources: list[str], sizes: dict[str, int], counts: dict[str, int], seed: int) -> datasets.Dataset:
    """``counts[d]`` rows of domain d: whole passes over its pool, then a seeded subset (copies after
    the first get ids ``<id>~<k>``)."""
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[int]] = {s: [] for s in sizes}
    for i, s in enumerate(sources):
        by_source[s].append(i)
    rows, copies = [], []
    for s in sorted(by_source):
        pool, k = np.array(by_source[s]), counts.get(s, 0)
        full, rest = divmod(k, len(pool))
        picked = [pool] * full + [np.sort(rng.choice(pool, size=rest, replace=False))]
        for rep, idx in enumerate(picked):
            rows.extend(idx.tolist())
            copies.extend([rep] * len(idx))
    mixed = train.select(rows)
    if max(copies, default=0) > 0:
        ids = [i if c == 0 else f"{i}~{c}" for i, c in zip(mixed["id"], copies)]
        mixed = mixed.remove_columns("id").add_column("id", ids)
    return mixed
