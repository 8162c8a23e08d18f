"""Delta-loss selection, as DataFlex's ``delta_loss`` selector scores examples (OpenDCAI/DataFlex
``src/dataflex/train/selector/delta_loss_selector.py``, read for this module): the drop of each
example's loss between an early and a later point of training,

    Δ_i = ℓ_i(early) − ℓ_i(later),

high positive Δ = the model is learning the example now; Δ ≈ 0 = learned already or never learned
(noise, mislabelled or garbage examples often stay high); Δ < 0 = forgotten. DataFlex records every
example's loss with a full pass at its first selection step and again at each later one.

Here both losses come from the per-sample store of an earlier stage (``dynamics=losses``), which
records each example's training loss whenever a batch serves it: no model pass. The early loss is the
mean over an example's first ``presentations`` records, the later one over its last ``presentations``.
Re-scoring while training (``selection.rescore_every``) reads this run's own store, which is
DataFlex's online use: the loss at the first epochs against the loss now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.errors import UserError, check
from assay.lazy import pd
from assay.registry import register
from assay.selection.base import SelectionContext
from assay.selection.scorers.dynamics_scores import DynamicsScorer


def loss_deltas(table: pd.DataFrame, presentations: int = 1) -> pd.Series:
    """Per id: mean loss over its first ``presentations`` records minus over its last ``presentations``
    (records in step order; the two windows overlap when an id has fewer than 2·presentations records).
    Ids with a single record have no change to measure and are left out."""
    table = table.assign(id=table["id"].astype(str)).sort_values(["id", "step"], kind="stable")[["id", "loss"]]
    by_id = table.groupby("id", sort=True)
    counts = by_id.size()
    early = by_id.head(presentations).groupby("id")["loss"].mean()
    late = by_id.tail(presentations).groupby("id")["loss"].mean()
    return (early - late)[counts >= 2]


@register("selection", "delta_loss")
@dataclass
class DeltaLoss(DynamicsScorer):
    """Delta loss (DataFlex): keep the examples whose loss dropped most between an earlier stage's first and last presentations."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        code="OpenDCAI/DataFlex: src/dataflex/train/selector/delta_loss_selector.py (DeltaLossSelector: delta_loss = "
             "initial_losses - current_losses), read for this implementation",
        defaults={
            "presentations": "1 (DataFlex: one loss per example at each selection step): follows",
        },
        deviations=(
            "Losses are the training losses an earlier stage recorded when each example was served (dynamics=losses), at the "
            "model of that step, not a full pass over the pool at one checkpoint as DataFlex makes at each selection step.",
            "Any selector applies; selector=top keeps the largest drops. DataFlex samples from a window of the delta ranking "
            "(window_size 20%) that slides from the largest drops toward smaller ones over the updates on a sigmoid schedule "
            "(k = 10), truncated at the first negative delta, the other examples at probability 1/40 of the window's: not "
            "implemented.",
            "DataFlex's first selection records the initial losses and returns a random subset; with selection.rescore_every and "
            "no dynamics_from the first epochs train on the whole pool instead.",
        ),
        checked="tests/unit/selection/test_delta_loss.py: deltas by hand on a constructed store (first/last presentation and "
                "windows of 2), the kept examples, detection of constructed never-learned (noisy) examples, errors",
        notes="DataFlex names no paper for delta_loss. Keeps half by default (selector=top). Ids the store saw only once have "
              "no loss change and count as unseen (selection.unseen).",
    )

    name: str = "delta_loss"
    presentations: int = 1
    """Records averaged at each end: the early loss is the mean over an example's first this many
    presentations in the store, the later loss over its last this many (1 = single records, as DataFlex's
    one loss per pass; more smooths the noise of batch-to-batch training losses)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(isinstance(self.presentations, int) and self.presentations >= 1, "selection.presentations", self.presentations,
              "must be a positive integer (records averaged at each end)")

    def score(self, ctx: SelectionContext) -> np.ndarray:
        deltas = loss_deltas(self.records(("loss",)), self.presentations)
        if deltas.empty:
            raise UserError("selection.dynamics_from", self.dynamics_from,
                            "records every example at most once; delta_loss needs at least two presentations per example "
                            "(train that stage for two epochs or more)")
        return self.align(ctx, deltas)
