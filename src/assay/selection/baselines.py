"""The baselines of config group ``selection``: keep everything (``none``) and a seeded uniform random
subset (``random``), what every scorer is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.registry import register
from assay.selection.base import Scorer, SelectionContext

RANDOM_SELECTION_STREAM = 1_000_003
"""Second seed word of selection=random's generator, so it is independent of every seed-only stream."""


@register("selection", "none")
@dataclass
class KeepAll(Scorer):
    """Keep every training example."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/selection/test_selection_ordering.py: keeps every example",
        notes="No selection: the baseline every scorer is compared with (selector=all).",
    )

    name: str = "none"
    scores_examples: ClassVar[bool] = False


@register("selection", "random")
@dataclass
class RandomSelection(Scorer):
    """A seeded uniform random score: with selector=top, a uniform random subset of a fraction or a count."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        deviations=(
            "Its own random stream (seed, 1000003), independent of the noise transforms' stream, so the random subset does not "
            "coincide with the noisy rows.",
        ),
        checked="tests/unit/selection/test_selection_ordering.py: fraction and count; tests/unit/selection/test_selectors.py: "
                "independent of the injected noise",
        notes="A uniform random subset (half the pool with selector=top unless a fraction or count is given): the baseline a "
              "scorer must beat at the same size.",
    )

    name: str = "random"
    budget: ClassVar[float] = 0.5

    def score(self, ctx: SelectionContext) -> np.ndarray:
        # A stream of its own: the noise transforms draw default_rng(seed).random(n) over the same n
        # rows, and reusing that stream would make this "random" subset drop exactly the noisy rows.
        return np.random.default_rng([self.seed, RANDOM_SELECTION_STREAM]).random(len(ctx.train))
