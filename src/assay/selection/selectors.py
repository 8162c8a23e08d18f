"""Selectors (config group ``selection/selector``): how a scorer's scores become kept ids.

Each entry holds only the fields it reads and its own ``keep(scores, context) -> mask``; a scorer's
preset picks its default (``conf/selection/<scorer>.yaml``: ``- selector: top``), and a run picks
another with ``selection/selector=<entry>``, e.g.
``selection=el2n selection/selector=anchor_quantile selection.selector.quantile=0.3``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Optional

import numpy as np
from omegaconf import MISSING

from assay.cards import MethodCard
from assay.errors import UserError, check
from assay.registry import register

GROUP = "selection/selector"
GUMBEL_STREAM = 5772156
"""Second seed word of gumbel_top's draw."""


@dataclass
class KeepContext:
    """What a selector may read besides the scores: the selection context (pool, splits, model) and
    the scorer (its budget, seed, and scoring other splits, e.g. the trusted anchors)."""

    data: Any
    """The :class:`~assay.selection.base.SelectionContext` the scores were computed on."""
    scorer: Any
    measured: dict = field(default_factory=dict)
    """What the selector measured (anchor threshold, group sizes), saved with the selection."""


@dataclass
class Selector:
    name: str = MISSING

    def keep(self, scores: np.ndarray, context: KeepContext) -> np.ndarray:
        """The kept mask (boolean, aligned with the scores; higher score = keep)."""
        raise TypeError(f"{type(self).__name__} does not implement keep()")


def finite(scores: np.ndarray) -> np.ndarray:
    """NaN scores (an example a scorer could not score) rank below every real score."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(scores), -np.inf, scores)


def top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep the k highest scores (ties broken by position, so the result is deterministic)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:k]] = True
    return mask


def quota_mask(scores: np.ndarray, groups: np.ndarray, quotas: dict[str, float], default: float, grouping: str = "sources") -> np.ndarray:
    """Within every group (source, cluster, ...) keep its top ⌊share x size⌋ by score (kMQ-style
    per-domain budgets)."""
    present = set(groups.tolist())
    unknown = sorted(set(quotas) - present)
    check(not unknown, "selection.selector.quotas", unknown, f"names groups not in the training pool ({grouping}); present: {sorted(present)}")
    mask = np.zeros(len(scores), dtype=bool)
    for group in present:
        rows = np.flatnonzero(groups == group)
        k = int(np.floor(quotas.get(group, default) * len(rows)))
        mask[rows[top_k_mask(scores[rows], k)]] = True
    return mask


def _check_fraction(fraction: Optional[float]) -> None:
    if fraction is not None:
        check(0.0 < fraction <= 1.0, "selection.selector.fraction", fraction, "must be in (0, 1]")


@register(GROUP, "all")
@dataclass
class All(Selector):
    """Keep every example."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/selection/test_selectors.py",
        notes="Keeps every example (the selector of selection=none).",
    )

    name: str = "all"

    def keep(self, scores: np.ndarray, context: KeepContext) -> np.ndarray:
        return np.ones(len(scores), dtype=bool)


@register(GROUP, "top")
@dataclass
class Top(Selector):
    """Keep the ``count`` highest scores, else the top ``fraction`` of the pool."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/selection/test_selectors.py: fraction, count and the scorer's budget",
        notes="Top-k / top-r by score (DELT's top-r and top-k selectors; LESS keeps its top 5%). With no fraction or count it "
              "keeps the scorer's budget, the share its paper keeps: LESS 5%, GOT-D 20%, LAVA and the β-DPO filter 80%, most "
              "others half. Ties are broken by position.",
    )

    name: str = "top"
    fraction: Optional[float] = None
    """Share of the pool to keep, in (0, 1]; null = the scorer's own budget (what its paper keeps:
    LESS 5%, GOT-D 20%, LAVA and the β-DPO filter 80%, most others half)."""
    count: Optional[int] = None
    """Number of examples to keep (overrides fraction)."""

    def __post_init__(self) -> None:
        _check_fraction(self.fraction)
        if self.count is not None:
            check(self.count > 0, "selection.selector.count", self.count, "must be a positive integer")

    def keep(self, scores: np.ndarray, context: KeepContext) -> np.ndarray:
        scores = finite(scores)
        if self.count is not None and self.count > len(scores):
            raise UserError("selection.selector.count", self.count, f"exceeds the {len(scores)} training examples")
        fraction = self.fraction if self.fraction is not None else context.scorer.budget
        k = self.count if self.count is not None else int(np.floor(fraction * len(scores)))
        context.measured["fraction" if self.count is None else "count"] = fraction if self.count is None else self.count
        return top_k_mask(scores, k)


@register(GROUP, "gumbel_top")
@dataclass
class GumbelTop(Top):
    """Gumbel-top-k: keep the k highest ``score/τ − g``, g ~ Gumbel(0, 1) i.i.d. (MATES's sampling)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Yu, Das & Xiong 2024, MATES: Model-Aware Data Selection for Efficient Pretraining with Data Influence Models "
              "(NeurIPS 2024), its selection step",
        arxiv="2406.06046",
        code="cxcscmu/MATES@5d2860c: src/select_data/select_data.py (metrics / temp + rng.gumbel, argpartition of the smallest "
             "selection_size)",
        defaults={"temperature": "0.5 (select_data.py): follows"},
        deviations=("The authors keep the smallest prediction/τ + g of a loss-change prediction (lower = better); assay's scores "
                    "are higher = keep, so the kept set is the largest score/τ − g with score = −prediction: the same draw.",
                    "Seeded by the run's seed and the scorer's stage (the authors draw from an unseeded default_rng()), so a "
                    "resumed or repeated run selects the same rows.",),
        checked="tests/unit/selection/test_mates.py: τ → 0 is the plain top-k; the draw is seeded by the scorer's seed and stage",
        notes="A stochastic top-k: examples below the cut are kept with a probability that grows with their score, so a "
              "selection repeated every stage does not lock onto one set. temperature=0 is the plain top-k.",
    )

    name: str = "gumbel_top"
    temperature: float = 0.5
    """τ: the scores are divided by τ before the Gumbel(0, 1) noise is subtracted; smaller = closer to the plain top-k."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.temperature >= 0, "selection.selector.temperature", self.temperature, "must be >= 0 (0 = the plain top-k)")

    def keep(self, scores: np.ndarray, context: KeepContext) -> np.ndarray:
        if self.temperature == 0:
            return super().keep(scores, context)
        # one draw per (run seed, stage): a scorer that re-selects names its stage, so every stage draws afresh
        # (its own stream word: default_rng(seed) alone is the noise transforms' stream over the same rows)
        draw = [int(context.scorer.seed), GUMBEL_STREAM, int(getattr(context.scorer, "stage", 0))]
        gumbel = np.random.default_rng(draw).gumbel(size=len(scores))
        context.measured["temperature"] = float(self.temperature)
        return super().keep(finite(scores) / self.temperature - gumbel, context)


@register(GROUP, "threshold")
@dataclass
class Threshold(Selector):
    """Keep every score >= ``threshold``."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/selection/test_selectors.py",
        notes="Keeps every score >= a fixed threshold in the scorer's units (e.g. the perplexity filter's max_ppl as minus the "
              "mean NLL).",
    )

    name: str = "threshold"
    threshold: Optional[float] = None
    """The lowest score kept (in the scorer's units: e.g. minus the mean NLL for perplexity)."""

    def __post_init__(self) -> None:
        check(self.threshold is not None, "selection.selector.threshold", self.threshold, "selector=threshold needs a number")

    def keep(self, scores: np.ndarray, context: KeepContext) -> np.ndarray:
        context.measured["threshold"] = float(self.threshold)
        return finite(scores) >= self.threshold


@register(GROUP, "anchor_quantile")
@dataclass
class AnchorQuantile(Selector):
    """CLUES's global threshold (Zhao et al., NeurIPS 2024): keep a score >= the ``quantile`` of the
    same scorer's scores on the trusted ``split``.

    NaN (unscorable) scores rank lowest, anchors and candidates alike: they count as -inf, so a NaN
    candidate is kept only when the threshold itself is -inf (the quantile falls on, or interpolates
    towards, an unscorable anchor), where everything is kept. How many scores were NaN is measured
    (``anchor_nan``, ``pool_nan``), since a -inf threshold means the anchors could not set one."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Zhao et al., CLUES: Collaborative (Private-domain) High-quality Data Selection for LLMs via Training Dynamics "
              "(NeurIPS 2024; arXiv version 2025)",
        arxiv="2507.03004",
        code="Ryan0v0/CLUES@196a018: Compute_score_anc.py scores the anchors; the repo has no thresholding code (research note)",
        defaults={
            "quantile": "0.1 (CLUES: a global threshold from the anchor scores, statistic not given in its code): assay's choice",
            "split": "val (CLUES: the public anchor set): follows in kind",
        },
        deviations=(
            "The statistic that turns anchor scores into CLUES's global threshold is unverified (min, mean or a percentile); "
            "assay makes it a quantile q.",
        ),
        checked="tests/unit/selection/test_selectors.py: the threshold is the anchors' quantile; empty or overlapping anchor "
                "sets are one-line errors",
    )

    name: str = "anchor_quantile"
    quantile: float = 0.1
    """q in [0, 1]: 0 = the lowest anchor score, 0.5 = the median. CLUES leaves the statistic open
    (its code has no thresholding); 0.1 keeps what scores like all but the worst tenth of trusted data."""
    split: str = "val"
    """The trusted anchor set (a split disjoint from train)."""

    anchors_threshold: ClassVar[bool] = True
    """Keeps by one threshold set on a trusted anchor split: a collaborative server computes it once
    (the :meth:`threshold_quantile` quantile of the anchors of :meth:`anchor_split`) and sends it to
    every client, instead of each client running :meth:`keep`."""

    def anchor_split(self) -> str:
        """The split the anchor threshold is set on."""
        return self.split

    def threshold_quantile(self) -> float:
        """The quantile of the anchor scores that is the threshold."""
        return self.quantile

    def __post_init__(self) -> None:
        check(0.0 <= self.quantile <= 1.0, "selection.selector.quantile", self.quantile, "must be in [0, 1]")

    def keep(self, scores: np.ndarray, context: KeepContext) -> np.ndarray:
        field_name, ctx = "selection.selector.split", context.data
        splits = ctx.splits or {}
        check(self.split in splits and self.split != "train", field_name, self.split, f"must name a split other than train; have {sorted(splits)}")
        anchor = splits[self.split]
        check(len(anchor) > 0, field_name, self.split, "the anchor set is empty; CLUES's threshold needs trusted examples")
        shared = set(anchor["id"]) & set(ctx.train["id"])
        check(not shared, field_name, self.split, f"shares {len(shared)} ids with train (e.g. {sorted(shared)[:3]}); the anchor set must be disjoint")
        anchor_scores = np.asarray(context.scorer.score(replace(ctx, train=anchor)), dtype=np.float64)
        threshold = self.threshold_of(anchor_scores, self.quantile)
        context.measured.update(anchor_threshold=threshold, anchor_size=len(anchor),
                                anchor_nan=int(np.isnan(anchor_scores).sum()), pool_nan=int(np.isnan(np.asarray(scores, dtype=np.float64)).sum()))
        return finite(scores) >= threshold

    @staticmethod
    def threshold_of(anchor_scores: np.ndarray, quantile: float) -> float:
        """The ``quantile`` of the anchor scores, NaN ranked lowest (as -inf); q = 0 is the lowest
        anchor. Between two finite neighbours this is numpy's default linear interpolation at
        position q (n - 1) of the sorted scores, unchanged. numpy gives NaN wherever a neighbour is
        infinite (-inf + (x - -inf) t, or inf x 0); here the value is the limit as the NaN scores go
        to -inf instead: an exact position is that order statistic, and any weight on -inf gives
        -inf (on +inf, +inf). The threshold is never NaN. Shared with the collaborative server."""
        s = np.sort(finite(anchor_scores))
        position = (len(s) - 1) * quantile
        lo = int(np.floor(position))
        hi = min(lo + 1, len(s) - 1)
        if np.isfinite(s[lo]) and np.isfinite(s[hi]):
            return float(np.quantile(s, quantile))
        if position == lo:
            return float(s[lo])
        return float(-np.inf if s[lo] == -np.inf else np.inf)


@register(GROUP, "quota")
@dataclass
class Quota(Selector):
    """Within every group of ``by``, keep the top share ``quotas[group]`` (``fraction`` for groups not named)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/selection/test_selectors.py: per-source quotas and quotas by any column",
        notes="Per-group budgets: the top share of each group (source, a column, or k-means clusters of the model's embeddings). "
              "With by=cluster and one share for all it spreads the budget over clusters in proportion to their size, as the "
              "static kMQ (arXiv 2409.11378) does, but takes each cluster's top scores rather than sampling by quality.",
    )

    name: str = "quota"
    quotas: dict[str, float] = field(default_factory=dict)
    """Per-group share kept, e.g. ``{code: 0.8, wiki: 0.3}``."""
    by: str = "source"
    """What to group by: a column of the training data (``source``, ``difficulty``, ...), or
    ``cluster``: k-means (``clusters``) on the scoring model's mean-pooled last hidden states, so a
    budget is spread over regions of the embedding space (the coverage idea of kMQ, arXiv 2409.11378,
    and CCS, arXiv 2210.15809), groups named ``c0``, ``c1``, ..."""
    clusters: int = 8
    """K for by=cluster."""
    fraction: Optional[float] = None
    """Share kept in groups that ``quotas`` does not name; null = the scorer's own budget."""

    def __post_init__(self) -> None:
        _check_fraction(self.fraction)
        for group, share in self.quotas.items():
            check(0.0 <= share <= 1.0, f"selection.selector.quotas.{group}", share, "must be in [0, 1]")
        check(self.clusters >= 1, "selection.selector.clusters", self.clusters, "must be a positive integer")

    def keep(self, scores: np.ndarray, context: KeepContext) -> np.ndarray:
        groups = self.groups(context)
        fraction = self.fraction if self.fraction is not None else context.scorer.budget
        kept = quota_mask(finite(scores), groups, self.quotas, fraction, f"selection.selector.by={self.by}")
        sizes = {str(g): [int((groups == g).sum()), int(kept[groups == g].sum())] for g in np.unique(groups)}
        context.measured.update(quota_by=self.by, quota_groups=sizes)
        return kept

    def groups(self, context: KeepContext) -> np.ndarray:
        """Each training example's group, as strings."""
        ctx = context.data
        if self.by != "cluster":
            check(self.by in ctx.train.column_names, "selection.selector.by", self.by,
                  f"is not a column of the training data ({sorted(ctx.train.column_names)}) nor 'cluster'")
            return np.asarray([str(v) for v in ctx.train[self.by]])
        if ctx.model is None:
            raise UserError("selection.selector.by", "cluster", "clusters the model's embeddings, and this stage provides no model")
        from assay.embeddings.clusters import kmeans
        from assay.models.passes import embed_examples

        x = embed_examples(ctx.model, ctx.train, ctx.tokenizer.pad_token_id, getattr(context.scorer, "batch_size", 32))
        return np.asarray([f"c{c}" for c in kmeans(x, self.clusters, context.scorer.seed).labels_])
