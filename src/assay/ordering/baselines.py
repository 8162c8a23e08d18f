"""The baselines of config group ``ordering``: a fresh seeded shuffle every epoch (``random``) and the
data's own order (``sequential``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.ordering.base import OrderingConfig
from assay.registry import register


@register("ordering", "random")
@dataclass
class RandomOrdering(OrderingConfig):
    """A fresh seeded shuffle every epoch."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/ordering/test_orderings.py, tests/unit/selection/test_selection_ordering.py: seeded permutations",
        notes="A fresh seeded shuffle every epoch: the baseline for every ordering (DELT's shuffle).",
    )

    name: str = "random"

    def order(self, rows: np.ndarray, scores: np.ndarray, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        return rows[rng.permutation(len(rows))]


@register("ordering", "sequential")
@dataclass
class SequentialOrdering(OrderingConfig):
    """Dataset order, every epoch (sources appear as the data lists them)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/ordering/test_orderings.py",
        notes="The data's own order every epoch (no shuffle): for data that is already ordered, and as a control.",
    )

    name: str = "sequential"

    def order(self, rows: np.ndarray, scores: np.ndarray, epoch: int) -> np.ndarray:
        return np.array(rows)
