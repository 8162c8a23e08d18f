"""Orderings (config group ``ordering``): kept rows + scores + epoch + seed -> a permutation.

Orderings are pure and seeded; one resumable sampler (``assay.ordering.sampler``) serves them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import II, MISSING

from assay.registry import register


@dataclass
class OrderingConfig:
    name: str = MISSING
    seed: int = II("seed")

    def order(self, rows: np.ndarray, scores: np.ndarray, epoch: int) -> np.ndarray:
        """The rows to visit in epoch ``epoch`` (a permutation of ``rows``)."""
        raise TypeError(f"{type(self).__name__} does not implement order()")


@register("ordering", "random")
@dataclass
class RandomOrdering(OrderingConfig):
    """A fresh seeded shuffle every epoch."""

    name: str = "random"

    def order(self, rows: np.ndarray, scores: np.ndarray, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        return rows[rng.permutation(len(rows))]


@register("ordering", "sequential")
@dataclass
class SequentialOrdering(OrderingConfig):
    """Dataset order, every epoch (sources appear as the data lists them)."""

    name: str = "sequential"

    def order(self, rows: np.ndarray, scores: np.ndarray, epoch: int) -> np.ndarray:
        return np.array(rows)
