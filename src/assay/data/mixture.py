"""Mixtures (config group ``mixture``): how many training examples to draw from each source.

A mixture is a pure, seeded function of the per-source pool sizes. Repetition of a source is
explicit (``max_repetition``), never hidden: a repeated copy gets the id ``<id>~<k>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from assay.lazy import datasets
import numpy as np
from omegaconf import II, MISSING

from assay.errors import UserError, check
from assay.registry import register


@dataclass
class MixtureConfig:
    name: str = MISSING
    num_examples: Optional[int] = None
    """Total training examples after mixing (default: as many as fit without over-repetition)."""
    max_repetition: int = 1
    """How many times one example may appear; 1 = sample without replacement."""
    seed: int = II("seed")

    def __post_init__(self) -> None:
        if self.num_examples is not None:
            check(self.num_examples > 0, "mixture.num_examples", self.num_examples, "must be a positive integer")
        check(self.max_repetition >= 1, "mixture.max_repetition", self.max_repetition, "must be >= 1")

    def proportions(self, sizes: dict[str, int]) -> Optional[dict[str, float]]:
        """Target share per source, or None to keep the pool as it is."""
        return None

    def apply(self, train: datasets.Dataset) -> tuple[datasets.Dataset, dict[str, int]]:
        sources = train["source"]
        sizes: dict[str, int] = {}
        for s in sources:
            sizes[s] = sizes.get(s, 0) + 1
        props = self.proportions(sizes)
        if props is None:
            return train, sizes
        counts = allocate(props, sizes, self.num_examples, self.max_repetition)
        rng = np.random.default_rng(self.seed)
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
        return mixed, {s: c for s, c in counts.items() if c > 0}


def allocate(props: dict[str, float], sizes: dict[str, int], total: Optional[int], max_rep: int) -> dict[str, int]:
    """Integer counts per source proportional to ``props`` (largest-remainder rounding).

    Without a ``total``, the largest total is used for which no source needs more than
    ``max_rep`` passes over its pool.
    """
    active = {s: p for s, p in props.items() if p > 0}
    if total is None:
        total = int(min(max_rep * sizes[s] / p for s, p in active.items()))
    raw = {s: total * p for s, p in active.items()}
    counts = {s: int(math.floor(v)) for s, v in raw.items()}
    for s in sorted(raw, key=lambda s: raw[s] - counts[s], reverse=True)[: total - sum(counts.values())]:
        counts[s] += 1
    for s, c in counts.items():
        if c > max_rep * sizes[s]:
            raise UserError(
                "mixture.num_examples",
                total,
                f"needs {c} examples from source {s!r} which has {sizes[s]}; lower it or raise mixture.max_repetition",
            )
    return counts


@register("mixture", "single")
@dataclass
class SingleMixture(MixtureConfig):
    """Use the training pool as it is (natural source proportions)."""

    name: str = "single"


@register("mixture", "weights")
@dataclass
class WeightsMixture(MixtureConfig):
    """Explicit per-source weights (normalised to sum to one; unlisted sources get zero)."""

    name: str = "weights"
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        for s, w in self.weights.items():
            check(w >= 0 and math.isfinite(w), f"mixture.weights.{s}", w, "weights must be finite and >= 0")
        check(sum(self.weights.values()) > 0, "mixture.weights", dict(self.weights), "at least one weight must be > 0")

    def proportions(self, sizes: dict[str, int]) -> dict[str, float]:
        unknown = sorted(set(self.weights) - set(sizes))
        if unknown:
            raise UserError("mixture.weights", unknown[0], f"is not a source of this data; sources are {sorted(sizes)}")
        total = sum(self.weights.values())
        return {s: self.weights.get(s, 0.0) / total for s in sizes}


@register("mixture", "temperature")
@dataclass
class TemperatureMixture(MixtureConfig):
    """Temperature sampling: p_i ∝ size_i^(1/T); T=1 natural, T→∞ uniform over sources."""

    name: str = "temperature"
    temperature: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.temperature > 0, "mixture.temperature", self.temperature, "must be > 0")

    def proportions(self, sizes: dict[str, int]) -> dict[str, float]:
        w = {s: n ** (1.0 / self.temperature) for s, n in sizes.items()}
        z = sum(w.values())
        return {s: v / z for s, v in w.items()}
