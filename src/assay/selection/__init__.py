"""Selection (config group ``selection``): a scorer gives every training example a score, a selector
keeps ids. The result (scores + kept mask, keyed by id) is the run's selection artefact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import datasets
import numpy as np
import pandas as pd
from omegaconf import II, MISSING

from assay.errors import UserError, check
from assay.registry import register


@dataclass
class Selection:
    ids: list[str]
    scores: np.ndarray
    """Higher = more worth keeping."""
    kept: np.ndarray
    """Boolean mask aligned with ``ids``."""

    def save(self, path: Path) -> None:
        pd.DataFrame({"id": self.ids, "score": self.scores, "kept": self.kept}).to_parquet(path, index=False)

    @property
    def kept_rows(self) -> np.ndarray:
        return np.flatnonzero(self.kept)


@dataclass
class SelectionContext:
    """What a scorer may use. Which parts are present depends on the stage; a scorer declares what
    it needs (``needs_model``) and the run provides it or stops with a clear message."""

    train: datasets.Dataset
    """The training pool (tokenized: text columns, ``prompt_ids`` and response ids, noise flags)."""
    splits: Optional[datasets.DatasetDict] = None
    """All tokenized splits (``val`` serves as the trusted target/anchor set by default)."""
    model: Any = None
    tokenizer: Any = None
    run_dir: Optional[Path] = None
    cache_dir: Optional[Path] = None


@dataclass
class SelectionConfig:
    name: str = MISSING
    seed: int = II("seed")

    @property
    def needs_model(self) -> bool:
        """True when scoring runs the run's model (it is built before selection either way)."""
        return False

    def score(self, ctx: SelectionContext) -> np.ndarray:
        """One score per training example, higher = keep."""
        return np.zeros(len(ctx.train))

    def keep(self, scores: np.ndarray) -> np.ndarray:
        return np.ones(len(scores), dtype=bool)

    def select(self, ctx: SelectionContext) -> Selection:
        if self.needs_model and ctx.model is None:
            raise UserError("selection", self.name, "needs the run's model, which this stage does not provide")
        scores = np.asarray(self.score(ctx), dtype=np.float64)
        kept = self.keep(scores)
        if not kept.any():
            raise UserError("selection", self.name, f"kept no examples out of {len(ctx.train)}; keep a larger fraction or count")
        return Selection(list(ctx.train["id"]), scores, kept)


def top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep the k highest scores (ties broken by position, so the result is deterministic)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:k]] = True
    return mask


@register("selection", "none")
@dataclass
class KeepAll(SelectionConfig):
    """Keep every training example."""

    name: str = "none"


@register("selection", "random")
@dataclass
class RandomSelection(SelectionConfig):
    """Keep a seeded uniform random subset, by fraction or by count (count wins when both are set)."""

    name: str = "random"
    fraction: Optional[float] = 0.5
    """Share of the pool to keep, in (0, 1]."""
    count: Optional[int] = None
    """Number of examples to keep (overrides fraction)."""

    def __post_init__(self) -> None:
        if self.count is not None:
            check(self.count > 0, "selection.count", self.count, "must be a positive integer")
        else:
            check(self.fraction is not None, "selection.fraction", self.fraction, "set a fraction in (0, 1] or a count")
            check(0.0 < self.fraction <= 1.0, "selection.fraction", self.fraction, "must be in (0, 1]")

    def score(self, ctx: SelectionContext) -> np.ndarray:
        return np.random.default_rng(self.seed).random(len(ctx.train))

    def keep(self, scores: np.ndarray) -> np.ndarray:
        k = self.count if self.count is not None else int(np.floor(self.fraction * len(scores)))
        if self.count is not None and self.count > len(scores):
            raise UserError("selection.count", self.count, f"exceeds the {len(scores)} training examples")
        return top_k_mask(scores, k)
