"""Scorers that read the per-sample store of an earlier stage: forgetting events, dataset cartography,
and β-DPO's margin filter. They cost no model pass: the earlier stage recorded everything while training
(``dynamics=losses``), keyed by example id, so any later stage can join on the ids it trains on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from assay.cards import MethodCard
from assay.errors import UserError, check
from assay.lazy import pd
from assay.registry import register
from assay.selection.base import Scorer, Selection, SelectionContext

UNSEEN = ("error", "lowest")


@dataclass
class DynamicsScorer(Scorer):
    budget: ClassVar[float] = 0.5
    reads_dynamics: ClassVar[bool] = True
    dynamics_from: Optional[str] = None
    """Run directory of the earlier stage whose per-sample store (``<run>/dynamics``) is read; that
    stage must train with ``dynamics=losses`` on the same pool (e.g. the warm-up stage of a recipe)."""
    unseen: str = "error"
    """Training ids the store has no record of: ``error``, or ``lowest`` (rank them below all others)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.unseen in UNSEEN, "selection.unseen", self.unseen, f"must be one of {list(UNSEEN)}")

    def for_rescoring(self, run_dir: Path) -> "DynamicsScorer":
        """Re-scoring reads this run's own store (flushed at the epoch boundary). Ids this run has not
        served yet have no record there, so they rank below every recorded id instead of failing."""
        return replace(self, dynamics_from=str(run_dir), unseen="lowest")

    def select(self, ctx: SelectionContext) -> Selection:
        if self.dynamics_from in (None, "") and self.rescores:
            # Online pruning (cartography / forgetting over the run's own epochs): with no earlier
            # stage to read, the first rescore_every epochs train on the whole pool and record it.
            keep_all = np.ones(len(ctx.train), dtype=bool)
            meta = {"scorer": self.name, "selector": "all", "kept": len(ctx.train), "pool": len(ctx.train), "rescored_from": "this run's dynamics"}
            return Selection(list(ctx.train["id"]), np.zeros(len(ctx.train)), keep_all, meta)
        return super().select(ctx)

    def records(self, needed: tuple[str, ...] = ()) -> pd.DataFrame:
        from assay.dynamics.store import read_store

        if self.dynamics_from in (None, ""):
            raise UserError("selection.dynamics_from", self.dynamics_from, f"{self.name} reads the per-sample store of an earlier stage; give the run directory of a stage trained with dynamics=losses (e.g. the warm-up stage)")
        root = Path(self.dynamics_from) / "dynamics"
        table = read_store(root)
        if table.empty:
            raise UserError("selection.dynamics_from", self.dynamics_from, f"has no per-sample records under {root}; that stage must run with dynamics=losses")
        for column in needed:
            if column not in table.columns:
                raise UserError("selection.dynamics_from", self.dynamics_from, f"the store has no {column!r} (columns: {sorted(table.columns)}); {self.name} needs a stage whose objective records it")
        return table

    def align(self, ctx: SelectionContext, per_id: pd.Series) -> np.ndarray:
        """Scores in training-row order; ids without a record follow ``unseen``."""
        ids = pd.Index(ctx.train["id"]).astype(str)
        values = per_id.reindex(ids).to_numpy(dtype=np.float64)
        missing = np.isnan(values)
        if missing.any() and self.unseen == "error":
            raise UserError("selection.dynamics_from", self.dynamics_from, f"has no record for {int(missing.sum())} of {len(ids)} training ids (e.g. {list(ids[missing][:3])}); train that stage over the whole pool, or set selection.unseen=lowest")
        return np.where(missing, -np.inf, values)


@register("selection", "forgetting")
@dataclass
class Forgetting(DynamicsScorer):
    """Forgetting events (Toneva et al. 2019, arXiv 1812.05159): correct -> incorrect transitions between presentations."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Toneva et al. 2019, An Empirical Study of Example Forgetting during Deep Neural Network Learning (ICLR 2019)",
        arxiv="1812.05159",
        code="allenai/cartography: cartography/selection/train_dy_filtering.py (compute_forgetfulness), as the research note "
             "reads it — not the authors' repository; not re-read",
        defaults={
            "correct_by": "confidence (Toneva et al.: the prediction is right): differs: confidence >= correct_at also works for "
                          "stores without top-1 flags; correct_by=top1 follows the paper",
            "never_learned": "1000 (the cartography code's stand-in for infinity): follows",
            "prefer": "stable (the paper prunes unforgettable examples, i.e. keeps forgettable): differs: for noisy pools; "
                      "prefer=forgettable follows the paper",
        },
        deviations=(
            "Presentations are the per-step records of an earlier stage (dynamics=losses): one response (SFT) or pair (σ(βh)) per "
            "record, not a classifier's label per epoch.",
        ),
        checked="tests/unit/selection/test_scorers.py: events counted by hand, by confidence and by top-1 correctness",
    )

    name: str = "forgetting"
    correct_by: str = "confidence"
    """What makes a presentation correct: ``confidence``, the recorded confidence >= ``correct_at``;
    or ``top1``, the recorded top-1 correctness, Toneva et al.'s own definition (the prediction is
    right): SFT's ``correct`` (every response token is the greedy prediction), ``pref_acc`` for pairs."""
    correct_at: float = 0.5
    """With correct_by=confidence, a presentation counts as correct when the recorded ``confidence``
    is >= this (mean gold-token probability for SFT; σ(βh) for pairs, so 0.5 = the chosen response is
    preferred)."""
    never_learned: float = 1000.0
    """Events charged to an example never correct at any presentation (the cartography code's
    stand-in for infinity)."""
    prefer: str = "stable"
    """``stable`` keeps rarely forgotten examples (never-learned ones, often noise, go last);
    ``forgettable`` keeps the most forgotten ones (Toneva et al. prune the unforgettable)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.prefer in ("stable", "forgettable"), "selection.prefer", self.prefer, "must be one of ['stable', 'forgettable']")
        check(self.correct_by in CORRECT_BY, "selection.correct_by", self.correct_by, f"must be one of {list(CORRECT_BY)}")

    def score(self, ctx: SelectionContext) -> np.ndarray:
        if self.correct_by == "confidence":
            table = self.records(("confidence",))
            correct = table["confidence"] >= self.correct_at
        else:
            table = self.records()
            column = next((c for c in TOP1_COLUMNS if c in table.columns), None)
            if column is None:
                raise UserError("selection.correct_by", self.correct_by, f"the store of {self.dynamics_from} has none of {list(TOP1_COLUMNS)} (an SFT or preference stage records them); use correct_by=confidence")
            correct = table[column] >= 0.5
        events = forgetting_events(table.assign(correct=correct.to_numpy()), self.never_learned)
        return self.align(ctx, -events if self.prefer == "stable" else events)


CORRECT_BY = ("confidence", "top1")
TOP1_COLUMNS = ("correct", "pref_acc")


def forgetting_events(table: pd.DataFrame, never_learned: float) -> pd.Series:
    """Per id: correct -> incorrect transitions between consecutive presentations (``table`` has
    id, step and a boolean ``correct``); ids never correct get ``never_learned``."""
    table = table.sort_values(["id", "step"], kind="stable")
    correct = table["correct"].to_numpy(dtype=bool)
    same = (table["id"].to_numpy()[1:] == table["id"].to_numpy()[:-1])
    forgot = np.r_[False, same & correct[:-1] & ~correct[1:]]
    ids = table["id"].astype(str).to_numpy()
    events = pd.Series(forgot.astype(float), index=ids).groupby(level=0).sum()
    learned = pd.Series(correct, index=ids).groupby(level=0).any()
    return events.where(learned, never_learned)


REGIONS = ("easy", "ambiguous", "hard")


@register("selection", "cartography")
@dataclass
class Cartography(DynamicsScorer):
    """Dataset cartography (Swayamdipta et al. 2020, arXiv 2009.10795): confidence / variability over epochs."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Swayamdipta et al. 2020, Dataset Cartography: Mapping and Diagnosing Datasets with Training Dynamics (EMNLP 2020)",
        arxiv="2009.10795",
        code="allenai/cartography: cartography/selection/train_dy_filtering.py, as the research note reads it; not re-read",
        defaults={"region": "ambiguous (high variability, the region the paper finds best out of distribution): follows"},
        deviations=(
            "Confidence is the recorded gold-token probability of the response (SFT) or σ(βh) (pairs), averaged within each epoch; "
            "the paper takes the gold-label probability at each epoch's end.",
            "Keeps half by default (selector=top); the code writes subsets at 1%-75%.",
        ),
        checked="tests/unit/selection/test_scorers.py: the three regions on a constructed store",
        notes="Variability is the population std (np.std), as the reference code.",
    )

    name: str = "cartography"
    region: str = "ambiguous"
    """Which region to keep: ``easy`` (high mean confidence μ), ``hard`` (low μ), ``ambiguous`` (high
    variability σ, the region the paper finds best for out-of-distribution generalisation)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.region in REGIONS, "selection.region", self.region, f"must be one of {list(REGIONS)}")

    def score(self, ctx: SelectionContext) -> np.ndarray:
        carto = cartography(self.records(("confidence",)))
        if ctx.run_dir is not None and Path(ctx.run_dir).is_dir():
            carto.to_parquet(Path(ctx.run_dir) / "cartography.parquet")
        column = {"easy": carto["confidence"], "hard": -carto["confidence"], "ambiguous": carto["variability"]}[self.region]
        return self.align(ctx, column)


def cartography(table: pd.DataFrame) -> pd.DataFrame:
    """Per id: confidence μ = mean over epochs of the (epoch-mean) gold probability, variability σ =
    its population std (``np.std``, as the reference code), correctness = epochs with p >= 0.5."""
    per_epoch = table.assign(id=table["id"].astype(str)).groupby(["id", "epoch"])["confidence"].mean()
    grouped = per_epoch.groupby(level=0)
    return pd.DataFrame(
        {
            "confidence": grouped.mean(),
            "variability": grouped.std(ddof=0),
            "correctness": (per_epoch >= 0.5).groupby(level=0).sum().astype(float),
            "epochs": grouped.size(),
        }
    )


@register("selection", "beta_filter")
@dataclass
class BetaFilter(DynamicsScorer):
    """β-DPO's data filter (Wu et al. 2024, arXiv 2407.08639) on stored reward margins: keep pairs near the mean margin."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Wu et al. 2024, β-DPO: Direct Preference Optimization with Dynamic β (NeurIPS 2024), its data filter",
        arxiv="2407.08639",
        code="junkangwu/beta-DPO: trainers.py (the filter in get_batch_metrics), as the research note reads it; not re-read",
        defaults={"metric": "reward_margin (the implicit-reward margin M_i): follows"},
        deviations=(
            "Offline, over an earlier stage's stored margins (each pair's mean over its records) and the whole pool's mean and "
            "population std; β-DPO filters every batch online against moving averages (momentum 0.9).",
            "A deterministic top-k of the Gaussian weight exp(−(M − M0)²/2σ²) instead of sampling without replacement.",
            "M_i is the β-scaled margin; the code uses the unscaled log-ratio gap (the z-score, hence the ranking, is the same at "
            "a fixed β).",
        ),
        checked="tests/unit/selection/test_scorers.py: a margin outlier (a flipped pair) is dropped",
        notes="Keeps 80% with selector=top (ρ = 0.8, the paper's default). The online filter with the dynamic β is "
              "objective/controller=beta_dpo.",
    )

    name: str = "beta_filter"
    budget: ClassVar[float] = 0.8
    """ρ = 0.8: β-DPO keeps 80% of pairs (drops 20% as uninformative)."""
    metric: str = "reward_margin"
    """Stored per-sample column holding the pair's implicit-reward margin M_i."""

    def score(self, ctx: SelectionContext) -> np.ndarray:
        table = self.records((self.metric,))
        margin = table.assign(id=table["id"].astype(str)).groupby("id")[self.metric].mean()
        mu, sigma = float(margin.mean()), float(margin.std(ddof=0)) or 1.0
        # log of β-DPO's weight p(M) ∝ exp(−(M − M0)² / 2σ²); a top-k over it is the deterministic
        # form of the paper's weighted sampling without replacement
        return self.align(ctx, -0.5 * ((margin - mu) / sigma) ** 2)
