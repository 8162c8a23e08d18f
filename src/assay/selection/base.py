"""What every selection shares: the scorer base class and the fields some scorers mix in, the
context a scorer reads, and the result it gives (scores + kept mask, keyed by id: the run's
selection artefact). The scorers themselves are in :mod:`assay.selection.scorers` and
:mod:`assay.selection.baselines`; selectors (how scores become kept ids) in
:mod:`assay.selection.selectors`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
from omegaconf import II, MISSING

from assay.errors import UserError, check
from assay.lazy import datasets, pd
from assay.selection.detection import FLAGS, detection_metrics, detection_report
from assay.selection.selectors import KeepContext, Selector, Top


@dataclass
class Selection:
    ids: list[str]
    scores: np.ndarray
    """Higher = more worth keeping."""
    kept: np.ndarray
    """Boolean mask aligned with ``ids``."""
    metadata: dict = field(default_factory=dict)
    """What the selection step measured: the selector, its threshold, detection AUROC / precision@k
    against ground-truth noise flags when the data has them."""
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    """Ground-truth noise flags of the pool (``is_flipped``, ``is_corrupted``) where the data has them,
    saved next to the scores so anyone can redo the detection analysis from the artefact alone."""

    def save(self, path: Path) -> None:
        columns = {"id": self.ids, "score": self.scores, "kept": self.kept, **{k: np.asarray(v, dtype=bool) for k, v in self.flags.items()}}
        pd.DataFrame(columns).to_parquet(path, index=False)
        Path(path).with_suffix(".json").write_text(json.dumps(self.metadata, indent=2, default=float))

    def detection_metrics(self) -> dict[str, float]:
        return detection_metrics(self.metadata)

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
    optimizer: Any = None
    """The live run's optimizer, when selection runs during training (re-scoring): a probe that steps
    as the run would (MATES's oracle) copies it, state and scheduled learning rate included."""
    gradient_clip: Optional[float] = None
    """The live run's gradient-norm clip (``trainer.gradient_clip_val``), for the same probes."""


@dataclass
class Scorer:
    """A scorer entry: one score per training example (higher = keep), plus the selector that turns
    the scores into kept ids. What a scorer needs from the run is said by class attributes, read
    before anything is built."""

    name: str = MISSING
    seed: int = II("seed")
    selector: Any = MISSING
    """The selector entry (``selection/selector=<entry>``; each scorer's preset in conf/selection
    picks a default)."""
    rescore_every: Optional[int] = None
    """Re-score the pool and re-select / re-order every this many epochs while training (null or 0 =
    select once, before training). Scoring then reads the live model, or this run's own per-sample
    store for scorers that read one; each re-selection is saved as ``selection_epoch<k>.parquet``."""

    budget: ClassVar[float] = 1.0
    """Share of the pool the ``top`` / ``quota`` selectors keep when they name none (what the method's paper keeps)."""
    needs_model: ClassVar[bool] = False
    """Scoring runs the run's model (it is built before selection either way)."""
    needs_trained_model: ClassVar[bool] = False
    """The scores read what a model has learned (its losses, gradients), so they mean nothing on random weights."""
    per_sample_gradients: ClassVar[bool] = False
    """Scoring forms per-sample gradients over whole parameters (refused under strategies that shard them)."""
    reads_dynamics: ClassVar[bool] = False
    """Scoring reads a per-sample store (an earlier stage's, or this run's when re-scoring)."""
    data_columns: ClassVar[tuple[str, ...]] = ()
    """Columns of the data the scorer reads beyond the tokenized text (kept by the loader)."""
    scores_examples: ClassVar[bool] = True
    """False for a selection that gives every example the same score (keep everything)."""
    moved_keys: ClassVar[dict[str, str]] = {
        "keep_rule": "selection/selector=<all|top|threshold|anchor_quantile|quota>",
        "fraction": "selection.selector.fraction",
        "count": "selection.selector.count",
        "threshold": "selection.selector.threshold (with selection/selector=threshold)",
        "anchor_quantile": "selection.selector.quantile (with selection/selector=anchor_quantile)",
        "anchor_split": "selection.selector.split (with selection/selector=anchor_quantile)",
        "quotas": "selection.selector.quotas (with selection/selector=quota)",
        "quota_by": "selection.selector.by (with selection/selector=quota)",
        "quota_clusters": "selection.selector.clusters (with selection/selector=quota)",
    }
    """Fields of the former single selection config, and where each now lives (the selector's own fields)."""

    def __post_init__(self) -> None:
        if self.selector == MISSING:  # built in code rather than composed: the top of the scorer's budget
            self.selector = Top()
        if isinstance(self.selector, dict):  # read back from a run's config.yaml
            from assay.registry import lookup

            known = lookup("selection/selector", self.selector.get("name"))
            self.selector = known(**{f.name: self.selector[f.name] for f in fields(known) if f.name in self.selector})
        if not isinstance(self.selector, Selector):
            raise UserError("selection.selector", self.selector, "must be a selector entry (selection/selector=top, threshold, anchor_quantile, quota, all)")
        if self.rescore_every is not None:
            check(self.rescore_every >= 0, "selection.rescore_every", self.rescore_every, "must be >= 0 epochs (0 or null = off)")

    @property
    def rescores(self) -> bool:
        return bool(self.rescore_every)

    def for_rescoring(self, run_dir: Path) -> "Scorer":
        """The scorer as it runs again mid-training: by default unchanged (it reads the live model
        through the context). Scorers that read an earlier stage's artefacts override this to read
        the current run instead."""
        return self

    def scoring_model(self, model: Any, tokenizer: Any) -> Any:
        """The model scoring reads (scorers that run one take it from :class:`ModelSource`)."""
        return model

    def check_scoring_model(self, model: Any) -> None:
        """Before anything is built: refuse a model the scores would mean nothing on."""

    def score(self, ctx: SelectionContext) -> np.ndarray:
        """One score per training example, higher = keep."""
        return np.zeros(len(ctx.train))

    def keep(self, ctx: SelectionContext, scores: np.ndarray) -> tuple[np.ndarray, dict]:
        """The selector's kept mask for these scores, and what it measured (e.g. the anchor threshold)."""
        context = KeepContext(ctx, self)
        return np.asarray(self.selector.keep(scores, context), dtype=bool), context.measured

    def select(self, ctx: SelectionContext) -> Selection:
        if self.needs_model and ctx.model is None:
            raise UserError("selection", self.name, "needs the run's model, which this stage does not provide")
        started = time.perf_counter()
        scores = np.asarray(self.score(ctx), dtype=np.float64)
        seconds = time.perf_counter() - started
        if len(scores) != len(ctx.train):
            raise ValueError(f"{self.name} gave {len(scores)} scores for {len(ctx.train)} examples")
        kept, measured = self.keep(ctx, scores)
        if not kept.any():
            raise UserError("selection", self.name, f"kept no examples out of {len(ctx.train)}; keep a larger selection.selector.fraction or count")
        metadata = {"scorer": self.name, "selector": self.selector.name, "kept": int(kept.sum()), "pool": len(kept), **measured}
        # what scoring cost: wall-clock seconds in all and per pool example, plus the scorer's own breakdown
        metadata["cost"] = {"seconds": seconds, "seconds_per_example": seconds / max(1, len(scores)), **getattr(self, "cost", {})}
        metadata["detection"] = detection_report(ctx.train, scores, kept)
        flags = {f: np.asarray(ctx.train[f], dtype=bool) for f in FLAGS if f in ctx.train.column_names}
        return Selection(list(ctx.train["id"]), scores, kept, metadata, flags)


@dataclass
class ModelSource:
    """Fields of the scorers that run a model: which weights they score with, and the refusal of
    random weights for scores that read what a model has learned. Listed first among a scorer's bases,
    so its ``scoring_model`` / ``check_scoring_model`` replace the no-model defaults of :class:`Scorer`."""

    dynamics_from: Optional[str] = None
    """Run directory of an earlier stage whose artefacts the scorer reads: its checkpoints (CLUES,
    LESS, LQS), or for every other scorer that runs a model, its final weights (e.g. a probe trained
    on the noisy pool: early-training loss, EL2N and embeddings flag what it has not fitted yet). This
    stage still trains from its own starting model. Empty = the stage's starting model."""
    allow_untrained: bool = False
    """Let a scorer that reads what a model has learned (losses, gradients: ``needs_trained_model``)
    score with a randomly initialised model. Off by default: a fresh model's losses are near-uniform
    and say nothing about the data, so such a run stops and asks for a probe (``dynamics_from``) or
    ``model.init_from``."""

    @property
    def scores_with_final_model(self) -> bool:
        """Whether ``dynamics_from``'s final weights replace the stage's model while scoring; scorers
        that load that stage's checkpoints themselves (CLUES, LESS, LQS) do not need them."""
        return self.needs_model

    def scoring_model(self, model: Any, tokenizer: Any) -> Any:
        """The model scorers read: ``model`` itself, or the final weights of ``dynamics_from``."""
        if self.dynamics_from in (None, "") or not self.scores_with_final_model:
            return model
        from transformers import AutoTokenizer

        from assay.models.build import check_run_dir, load_run_model

        run = check_run_dir(self.dynamics_from, "selection.dynamics_from")
        theirs = AutoTokenizer.from_pretrained(run / "tokenizer").get_vocab()
        check(theirs == tokenizer.get_vocab(), "selection.dynamics_from", self.dynamics_from,
              "has a different tokenizer vocabulary from this run's; score with a run of the same model and data")
        device = next(model.parameters()).device
        return load_run_model("selection.dynamics_from", self.dynamics_from, run, next(model.parameters()).dtype)[0].to(device).train(model.training)

    def check_scoring_model(self, model: Any) -> None:
        """Before anything is built: a scorer that needs a trained model gets one. The model counts
        as trained when the scorer reads an earlier stage (``dynamics_from``) or the stage's model
        was loaded rather than built from a config (``model.randomly_initialised``)."""
        if not self.needs_trained_model or self.allow_untrained or self.dynamics_from not in (None, ""):
            return
        if getattr(model, "randomly_initialised", False):
            raise UserError(
                "selection", self.name,
                f"scores with what a model has learned, and model={model.name} is randomly initialised (built from its config); "
                "score with a probe run (selection.dynamics_from=<its run dir>, e.g. a short warm-up stage) or start from trained "
                "weights (model.init_from=<run dir>), or set selection.allow_untrained=true to score with random weights anyway",
            )


@dataclass
class TargetSet:
    """Fields of the scorers that compare the pool with a trusted target set (LESS, CLUES, RDS+,
    LAVA, GOT-D): which split, and optionally which of its sources, e.g. one skill to select for."""

    target_split: str = "val"
    """The trusted / target examples: a split of the run's data other than train."""
    target_sources: list[str] = field(default_factory=list)
    """Keep only these sources of the target split (e.g. ``[add]``: select for one skill); empty = all."""

    def target(self, ctx: "SelectionContext") -> datasets.Dataset:
        splits = ctx.splits or {}
        check(self.target_split in splits and self.target_split != "train", "selection.target_split", self.target_split,
              f"not a split of this run other than train; splits are {sorted(splits)}")
        ds = splits[self.target_split]
        if self.target_sources:
            have = set(ds["source"])
            unknown = sorted(set(self.target_sources) - have)
            check(not unknown, "selection.target_sources", unknown, f"not sources of the {self.target_split} split; it has {sorted(have)}")
            wanted = set(self.target_sources)
            ds = ds.filter(lambda source: source in wanted, input_columns="source")
        check(len(ds) > 0, "selection.target_split", self.target_split, "is empty: a target set needs at least one example")
        return ds
