"""Per-batch selection: each optimizer step draws a batch and trains on a subset of it chosen with
the model as it stands (``batch_selection=<option>``). The data module draws ``drawn(b)`` examples
per batch (b = ``data.batch_size``); the module replaces a training batch by its selected subset
before the objective sees it, so the backward pass, every callback and the per-sample store see
the examples trained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

from assay.cards import MethodCard
from assay.registry import register


@dataclass
class BatchSelection:
    name: str = MISSING

    def drawn(self, batch_size: int) -> int:
        """Examples the data module serves per batch for a trained batch of ``batch_size``."""
        return batch_size

    def check_run(self, spec: Any) -> None:
        """Refuse, in one line, what this option cannot run with (other groups of the composed run)."""

    def build(self, model: Any, size: int, seed: int) -> Optional[Any]:
        """The selector the module calls on every training batch (also a callback); None trains on the whole batch."""
        return None


@register("batch_selection", "none")
@dataclass
class WholeBatch(BatchSelection):
    """Train on every example of each batch (no per-batch selection)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/integration/test_colm_run.py: a run without it trains data.batch_size examples a step",
        notes="No per-batch selection: the baseline of batch b and of the large batch r·b (data.batch_size=r·b).",
    )

    name: str = "none"
