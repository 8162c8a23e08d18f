"""NEAR: nearest-neighbour selection toward a target set, as DataFlex's ``near`` selector does it
(OpenDCAI/DataFlex ``src/dataflex/offline_selector/offline_near_selector.py`` builds the neighbour lists,
``src/dataflex/train/selector/near_selector.py`` selects from them; both read for this module).

Every target (query) example j lists its K nearest pool examples by cosine similarity of unit-normalised
sentence embeddings (DataFlex: FAISS IVFFlat L2 search on normalised vectors, the same order). The
selection walks the lists column by column: every query's nearest pool example first (queries in order),
then every query's second nearest, and so on, skipping examples already taken, until the budget is
filled. Each target example therefore gets its own nearest neighbours: the selection covers the whole
target set, rather than the part of it the pool is densest around.

As a score (higher = keep) this is minus the position at which the walk first reaches an example,

    p_i = min_j ( rank_j(i) · M + j )      over the M queries j whose K nearest include i,

so ``selector=top`` with a count reproduces DataFlex's selection. Pool examples no list reaches rank
after every reached one, ordered by their best cosine to any target example.

How it differs from ``selection=embed_sim`` (RDS+): that scores each pool example by its maximum (or
mean) cosine to the target set and keeps the highest, so many picks can be the neighbours of a few
target examples; NEAR takes the k-th neighbour of every target example before any (k+1)-th.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.errors import check
from assay.registry import register
from assay.ot.knn_transport import CELLS, nearest
from assay.selection.base import ModelSource, Scorer, SelectionContext, TargetSet
from assay.selection.scorers.ot import check_pair

def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def near_scores(pool: np.ndarray, target: np.ndarray, neighbours: int) -> np.ndarray:
    """−p_i, the column-major position at which the walk over every target example's ``neighbours``
    nearest pool examples first takes pool example i; unreached examples get −(M·K + 2 − best cosine).
    On unit vectors the Euclidean order (``nearest``) is the cosine order."""
    x, y = unit_rows(pool), unit_rows(target)
    n, m = len(x), len(y)
    _, order = nearest(x, y, neighbours)  # [M, K], nearest first, ties by pool order
    k = order.shape[1]
    first = np.full(n, np.inf)
    np.minimum.at(first, order.ravel(), (np.arange(k)[None, :] * m + np.arange(m)[:, None]).ravel().astype(np.float64))
    reached = np.isfinite(first)
    if reached.all():
        return -first
    rows = max(1, min(m, CELLS // max(n, 1)))
    best_cos = np.max([(y[s:s + rows] @ x.T).max(0) for s in range(0, m, rows)], axis=0)
    return np.where(reached, -first, -(m * k + 2.0 - best_cos))


@dataclass
class TargetEmbeddings(ModelSource, Scorer, TargetSet):
    """Fields of the scorers that compare pool and target in one embedding space (NEAR, TSDS)."""

    budget: ClassVar[float] = 0.5
    needs_trained_model: ClassVar[bool] = False
    embedder: str = "minilm"
    """Embedder name (registry ``embedder``: hidden_mean, minilm, column); one embedder for pool and target."""
    embedder_options: dict[str, Any] = field(default_factory=dict)
    """Fields of the chosen embedder, e.g. ``{column: embedding}`` for column."""

    def __post_init__(self) -> None:
        self.embedder_config()  # names an unknown embedder or field now
        super().__post_init__()

    def embedder_config(self) -> Any:
        from assay.embeddings.build import build_embedder

        return build_embedder(self.embedder, self.embedder_options)

    @property
    def needs_model(self) -> bool:
        return self.embedder_config().needs_model

    @property
    def data_columns(self) -> tuple[str, ...]:
        return self.embedder_config().data_columns

    def embed_pair(self, ctx: SelectionContext) -> tuple[np.ndarray, np.ndarray]:
        """Pool and target embeddings, checked (finite, one dimension)."""
        embedder = self.embedder_config()
        x = embedder.embed(ctx.train, ctx.model, ctx.tokenizer, ctx.cache_dir)
        y = embedder.embed(self.target(ctx), ctx.model, ctx.tokenizer, ctx.cache_dir)
        check_pair(x, y)
        return x, y


@register("selection", "near")
@dataclass
class Near(TargetEmbeddings):
    """NEAR (DataFlex): every target example's nearest pool examples in turn, by cosine of sentence embeddings."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        code="OpenDCAI/DataFlex: src/dataflex/offline_selector/offline_near_selector.py (neighbour lists) and "
             "src/dataflex/train/selector/near_selector.py (column-wise walk), read for this implementation",
        defaults={
            "neighbours": "1000 (DataFlex offline_near_Selector max_K): follows",
            "embedder": "minilm (DataFlex: Qwen/Qwen3-Embedding-0.6B through vLLM or sentence-transformers): differs: a small "
                        "offline encoder; any embedder applies",
            "target_split": "val (DataFlex: a query file, else the first 100 candidates): differs: the run's trusted split",
        },
        deviations=(
            "Exact neighbours (Euclidean on unit vectors, i.e. the cosine order; assay.ot.knn_transport.nearest) instead of FAISS "
            "IVFFlat (nlist = √N/2, nprobe = 10), which may miss true neighbours; no faiss dependency.",
            "A score per example (minus its position in the walk) so that any selector applies; selector=top with a count takes "
            "DataFlex's selection. DataFlex stops with an error when the lists cannot fill the budget; here the unreached "
            "examples follow, by their best cosine to the target.",
            "Texts are the run's prompt and response (the embedder's own text), not DataFlex's Instruction/Input/Output/Prediction "
            "template.",
        ),
        checked="tests/unit/selection/test_near.py: the walk's positions by hand on constructed vectors, the difference from "
                "embed_sim's max-cosine ranking, unreached examples, composing with selection=near",
        notes="DataFlex names no paper for near. Differs from selection=embed_sim (RDS+): that keeps the highest max-cosine "
              "examples, which may all be neighbours of a few target examples; NEAR takes every target example's k-th "
              "neighbour before any (k+1)-th. Keeps half by default (selector=top).",
    )

    name: str = "near"
    neighbours: int = 1000
    """K: nearest pool examples listed per target example (DataFlex's max_K). Examples beyond every list
    rank after all listed ones."""

    def __post_init__(self) -> None:
        check(isinstance(self.neighbours, int) and self.neighbours >= 1, "selection.neighbours", self.neighbours, "must be a positive integer")
        super().__post_init__()

    def score(self, ctx: SelectionContext) -> np.ndarray:
        return near_scores(*self.embed_pair(ctx), self.neighbours)
