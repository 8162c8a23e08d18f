"""Score- and group-driven orderings: curricula, DELT folding, blocked, interleaved, end-of-training upsampling.

Every ordering here is a pure, seeded function of (kept rows, per-row keys, epoch). The keys come
from :meth:`OrderingConfig.keys` (a numeric score for curricula, a group label for blocked /
interleaved), resolved once before training from the training split, so the
orderings themselves never touch a dataset or a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.errors import check
from assay.ordering.base import OrderingConfig, check_score_file, resolve_keys
from assay.registry import register


def _rng(seed: int, epoch: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, salt])


def ascending(rows: np.ndarray, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows sorted by score, ascending; ties (e.g. the three difficulty levels of the skills corpus)
    broken by a seeded shuffle, so items of equal score do not keep dataset order."""
    tie = rng.permutation(len(rows))
    return rows[np.lexsort((tie, scores.astype(np.float64)))]


@dataclass
class ScoreOrdering(OrderingConfig):
    score_from: str = "difficulty"
    """Where the per-example score comes from: ``selection`` (the selection scores, higher = kept
    first by the selector), a numeric column of the training split (``difficulty``), or the path of a
    Parquet file with ``id`` and ``score`` columns (e.g. an earlier stage's ``selection.parquet``).
    Low score = easy."""

    def __post_init__(self) -> None:
        check_score_file(self.score_from, "ordering.score_from")

    def keys(self, train, selection_scores):
        return resolve_keys(train, selection_scores, self.score_from, "ordering.score_from", numeric=True)

    @property
    def sorts_by_keys(self) -> bool:
        return True

    @property
    def key_source(self) -> tuple[str, str]:
        return "ordering.score_from", self.score_from


@register("ordering", "curriculum")
@dataclass
class Curriculum(ScoreOrdering):
    """Easy -> hard: ascending score every epoch (ties shuffled, seeded)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Bengio, Louradour, Collobert & Weston 2009, Curriculum Learning (ICML 2009)",
        arxiv=None,
        code=None,
        defaults={"score_from": "difficulty (a column of the data; selection or a score file also work): assay's choice"},
        deviations=(
            "No pacing: every example is available from the start, sorted easy to hard each epoch; Bengio et al. grow the "
            "training distribution, and Skill-it's curriculum baseline grows the pool with a linear or log pacing function.",
            "Ties (e.g. equal difficulty levels) are broken by a seeded shuffle.",
        ),
        checked="tests/unit/ordering/test_orderings.py: sorted ascending, ties shuffled by the seed",
    )

    name: str = "curriculum"

    def order(self, rows, scores, epoch):
        rows = np.asarray(rows)
        return ascending(rows, self.row_keys(rows, scores), _rng(self.seed, epoch))


@register("ordering", "anti_curriculum")
@dataclass
class AntiCurriculum(ScoreOrdering):
    """Hard -> easy: descending score every epoch (the anti-curriculum baseline of Skill-It)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Chen et al. 2023, Skill-it! A Data-Driven Skills Framework for Understanding and Training Language Models (NeurIPS 2023), its anti-curriculum baseline",
        arxiv="2307.14430",
        code="HazyResearch/skill-it: trainer/curriculum_trainer.py, as the research note reads it; not re-read",
        defaults={"score_from": "difficulty (Skill-it: each example's loss under the initial model): differs: any score source"},
        deviations=(
            "No pacing function (Skill-it's baseline grows the admissible pool linearly or logarithmically).",
        ),
        checked="tests/unit/ordering/test_orderings.py: sorted descending",
    )

    name: str = "anti_curriculum"

    def order(self, rows, scores, epoch):
        rows = np.asarray(rows)
        return ascending(rows, -self.row_keys(rows, scores).astype(np.float64), _rng(self.seed, epoch))


@register("ordering", "folding")
@dataclass
class Folding(ScoreOrdering):
    """DELT folding (Dai et al. 2025, arXiv 2506.21545): sort ascending, emit L strided easy->hard passes."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Dai et al. 2025, Data Efficacy for Language Model Training (DELT), Folding Ordering",
        arxiv="2506.21545",
        code="microsoft/DELT: data_ordering/folding.py, config/folding.yaml, as the research note reads them; not re-read",
        defaults={
            "layers": "3 (folding_layer: 3): follows",
            "score_from": "selection (DELT: the LQS score): follows in kind (any scorer's scores)",
        },
        deviations=(
            "Ties broken by a seeded shuffle, and the fold re-applied every epoch (DELT orders one pass over the data).",
        ),
        checked="tests/unit/ordering/test_orderings.py: the fold structure by hand, L ascending passes",
    )

    name: str = "folding"
    score_from: str = "selection"
    layers: int = 3
    """L, the number of folds: fold l holds the sorted items at positions i with i mod L == l
    (DELT's ``folding_layer``, default 3). Every item appears once; each fold spans the full range."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.layers >= 1, "ordering.layers", self.layers, "must be a positive integer")

    def order(self, rows, scores, epoch):
        rows = np.asarray(rows)
        ranked = ascending(rows, self.row_keys(rows, scores), _rng(self.seed, epoch))
        return fold(ranked, self.layers)


def fold(ranked: np.ndarray, layers: int) -> np.ndarray:
    """DELT's folding of an already sorted sequence: concat over l of ranked[l::L]."""
    return np.concatenate([ranked[l::layers] for l in range(layers)]) if len(ranked) else ranked


@dataclass
class GroupOrdering(OrderingConfig):
    by: str = "source"
    """Training-split column that names each example's group (``source`` or ``difficulty``)."""

    def keys(self, train, selection_scores):
        return resolve_keys(train, selection_scores, self.by, "ordering.by", numeric=False)

    @property
    def sorts_by_keys(self) -> bool:
        return True

    @property
    def key_source(self) -> tuple[str, str]:
        return "ordering.by", self.by


def _groups(rows: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> dict:
    """Rows per group label (labels sorted), each group shuffled with ``rng``."""
    out = {}
    for g in sorted(set(labels.tolist()), key=str):
        members = rows[labels == g]
        out[g] = members[rng.permutation(len(members))]
    return out


@register("ordering", "blocked")
@dataclass
class Blocked(GroupOrdering):
    """Contiguous blocks per group, shuffled inside (the "blocked" strategy of Yang et al. 2024, arXiv 2408.07888)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Yang, Bean, McCraith & Mahdi 2024, Fine-tuning LLMs with Human-inspired Learning Strategies in Medical QA "
              "(FITML @ NeurIPS 2024), the blocked strategy",
        arxiv="2408.07888",
        code="Oxford-AI-for-Society/human-learning-strategies: training/data_ordering.py, as the research note reads it (its interleaved helpers shadow each other and would not run as released); not re-read",
        defaults={
            "by": "source (Yang et al.: categories from UMAP + HDBSCAN clusters): differs: the data's own groups",
            "shuffle_blocks": "false (blocks in label order): assay's choice",
        },
        deviations=("Groups are a column of the data, not clusters of the questions.",),
        checked="tests/unit/ordering/test_orderings.py: contiguous blocks",
    )

    name: str = "blocked"
    shuffle_blocks: bool = False
    """Visit the blocks in a seeded random order each epoch (false = sorted by label, so blocking
    by ``difficulty`` goes 1 -> 2 -> 3)."""

    def order(self, rows, scores, epoch):
        rows = np.asarray(rows)
        rng = _rng(self.seed, epoch)
        groups = _groups(rows, self.row_keys(rows, scores), rng)
        names = list(groups)
        if self.shuffle_blocks:
            names = [names[i] for i in rng.permutation(len(names))]
        return np.concatenate([groups[g] for g in names]) if names else rows[:0]


@register("ordering", "interleaved")
@dataclass
class Interleaved(GroupOrdering):
    """Round-robin across groups: one example of each group in turn (each group shuffled, seeded)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Yang, Bean, McCraith & Mahdi 2024, Fine-tuning LLMs with Human-inspired Learning Strategies in Medical QA "
              "(FITML @ NeurIPS 2024), the interleaved strategy",
        arxiv="2408.07888",
        code="Oxford-AI-for-Society/human-learning-strategies: training/data_ordering.py, as the research note reads it (its interleaved helpers shadow each other and would not run as released); not re-read",
        defaults={"by": "source (Yang et al.: categories from clustering): differs: the data's own groups"},
        deviations=(
            "Round-robin of single examples; Yang et al. split each category into three consecutive parts and round-robin the "
            "parts.",
        ),
        checked="tests/unit/ordering/test_orderings.py: round-robin, unequal groups keep every example",
    )

    name: str = "interleaved"

    def order(self, rows, scores, epoch):
        rows = np.asarray(rows)
        groups = list(_groups(rows, self.row_keys(rows, scores), _rng(self.seed, epoch)).values())
        out = []
        for i in range(max((len(g) for g in groups), default=0)):
            out.extend(g[i] for g in groups if i < len(g))  # an exhausted group drops out of the round
        return np.asarray(out, dtype=rows.dtype)
