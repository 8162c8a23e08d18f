"""Selection (config group ``selection``): a scorer gives every training example a score, a selector
keeps ids. The result (scores + kept mask, keyed by id) is the run's selection artefact."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
from omegaconf import II, MISSING

from assay.errors import UserError, check
from assay.lazy import datasets, pd
from assay.registry import register


KEEP_RULES = ("all", "top", "threshold", "anchor_quantile", "quota")
RANDOM_SELECTION_STREAM = 1_000_003
"""Second seed word of selection=random's generator, so it is independent of every seed-only stream."""
FLAGS = ("is_corrupted", "is_flipped")
"""Ground-truth noise flags: where the training split has one, every selection is scored against it."""


@dataclass
class Selection:
    ids: list[str]
    scores: np.ndarray
    """Higher = more worth keeping."""
    kept: np.ndarray
    """Boolean mask aligned with ``ids``."""
    metadata: dict = field(default_factory=dict)
    """What the selection step measured: the keep rule, its threshold, detection AUROC / precision@k
    against ground-truth noise flags when the data has them."""

    def save(self, path: Path) -> None:
        pd.DataFrame({"id": self.ids, "score": self.scores, "kept": self.kept}).to_parquet(path, index=False)
        Path(path).with_suffix(".json").write_text(json.dumps(self.metadata, indent=2, default=float))

    def detection_metrics(self) -> dict[str, float]:
        """Detection against each ground-truth flag as flat metrics (``selection/is_corrupted/auroc``,
        ``…/precision_at_k``, ``…/kept_rate``), so sweeps compare them like any other metric."""
        out = {}
        for flag, report in self.metadata.get("detection", {}).items():
            for key in ("auroc", "precision_at_k", "kept_rate"):
                out[f"selection/{flag}/{key}"] = float(report[key])
        return out

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
    """A scorer (``score``) plus the selector that turns its scores into kept ids (``keep_rule``)."""

    name: str = MISSING
    seed: int = II("seed")
    keep_rule: str = "top"
    """How scores become kept ids: ``all``; ``top`` (the ``count`` highest, else the top ``fraction``);
    ``threshold`` (score >= ``threshold``); ``anchor_quantile`` (CLUES's global threshold: score >= the
    ``anchor_quantile`` quantile of the same scorer's scores on the trusted ``anchor_split``);
    ``quota`` (the top share ``quotas[group]`` within every group of ``quota_by``, ``fraction`` for
    the rest)."""
    fraction: Optional[float] = 1.0
    """Share of the pool to keep with keep_rule=top, in (0, 1]."""
    per_sample_gradients: ClassVar[bool] = False
    """True when scoring forms per-sample gradients over whole parameters (refused under strategies that shard them)."""
    count: Optional[int] = None
    """Number of examples to keep with keep_rule=top (overrides fraction)."""
    threshold: Optional[float] = None
    """Keep scores >= this with keep_rule=threshold."""
    anchor_quantile: float = 0.1
    """q in [0, 1] for keep_rule=anchor_quantile: 0 = the lowest anchor score, 0.5 = the median. CLUES
    leaves the statistic open (its code has no thresholding); 0.1 keeps what scores like all but the
    worst tenth of trusted data."""
    anchor_split: str = "val"
    """The trusted anchor set for keep_rule=anchor_quantile (a split disjoint from train)."""
    quotas: dict[str, float] = field(default_factory=dict)
    """Per-group share kept with keep_rule=quota, e.g. ``{code: 0.8, wiki: 0.3}``; groups not named
    keep ``fraction``."""
    quota_by: str = "source"
    """What keep_rule=quota groups by: a column of the training data (``source``, ``difficulty``, ...),
    or ``cluster``: k-means (``quota_clusters``) on the scoring model's mean-pooled last hidden
    states, so a budget is spread over regions of the embedding space (the coverage idea of kMQ,
    arXiv 2409.11378, and CCS, arXiv 2210.15809), groups named ``c0``, ``c1``, ..."""
    quota_clusters: int = 8
    """K for quota_by=cluster."""
    dynamics_from: Optional[str] = None
    """Run directory of an earlier stage whose artefacts the scorer reads: its per-sample store
    (cartography, forgetting, β filter), its checkpoints (CLUES, LESS, LQS), or for every scorer that
    runs a model, its final weights (e.g. a probe trained on the noisy pool: early-training loss,
    EL2N and embeddings flag what it has not fitted yet). This stage still trains from its own
    starting model. Empty = the stage's starting model; scorers that read no model ignore it."""
    allow_untrained: bool = False
    """Let a scorer that reads what a model has learned (losses, gradients: ``needs_trained_model``)
    score with a randomly initialised model. Off by default: a fresh model's losses are near-uniform
    and say nothing about the data, so such a run stops and asks for a probe (``dynamics_from``) or
    ``model.init_from``."""
    rescore_every: Optional[int] = None
    """Re-score the pool and re-select / re-order every this many epochs while training (null or 0 =
    select once, before training). Scoring then reads the live model, or this run's own per-sample
    store for scorers that read one; each re-selection is saved as ``selection_epoch<k>.parquet``."""

    def __post_init__(self) -> None:
        check(self.keep_rule in KEEP_RULES, "selection.keep_rule", self.keep_rule, f"must be one of {list(KEEP_RULES)}")
        if self.count is not None:
            check(self.count > 0, "selection.count", self.count, "must be a positive integer")
        elif self.keep_rule in ("top", "quota"):
            check(self.fraction is not None, "selection.fraction", self.fraction, "set a fraction in (0, 1] or a count")
        if self.fraction is not None:
            check(0.0 < self.fraction <= 1.0, "selection.fraction", self.fraction, "must be in (0, 1]")
        if self.keep_rule == "threshold":
            check(self.threshold is not None, "selection.threshold", self.threshold, "keep_rule=threshold needs a number")
        check(0.0 <= self.anchor_quantile <= 1.0, "selection.anchor_quantile", self.anchor_quantile, "must be in [0, 1]")
        for source, share in self.quotas.items():
            check(0.0 <= share <= 1.0, f"selection.quotas.{source}", share, "must be in [0, 1]")
        check(self.quota_clusters >= 1, "selection.quota_clusters", self.quota_clusters, "must be a positive integer")
        if self.rescore_every is not None:
            check(self.rescore_every >= 0, "selection.rescore_every", self.rescore_every, "must be >= 0 epochs (0 or null = off)")

    def scoring_model(self, model: Any, tokenizer: Any) -> Any:
        """The model scorers read: ``model`` itself, or the final weights of ``dynamics_from``."""
        if self.dynamics_from in (None, "") or not self.scores_with_final_model:
            return model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from assay.models.build import check_run_dir

        run = check_run_dir(self.dynamics_from, "selection.dynamics_from")
        theirs = AutoTokenizer.from_pretrained(run / "tokenizer").get_vocab()
        check(theirs == tokenizer.get_vocab(), "selection.dynamics_from", self.dynamics_from,
              "has a different tokenizer vocabulary from this run's; score with a run of the same model and data")
        device = next(model.parameters()).device
        return AutoModelForCausalLM.from_pretrained(run / "model", dtype=next(model.parameters()).dtype).to(device).train(model.training)

    @property
    def rescores(self) -> bool:
        return bool(self.rescore_every)

    def for_rescoring(self, run_dir: Path) -> "SelectionConfig":
        """The scorer as it runs again mid-training: by default unchanged (it reads the live model
        through the context). Scorers that read an earlier stage's artefacts override this to read
        the current run instead."""
        return self

    @property
    def needs_model(self) -> bool:
        """True when scoring runs the run's model (it is built before selection either way)."""
        return False

    @property
    def needs_trained_model(self) -> bool:
        """True when the scores read what a model has learned (its losses, gradients), so they mean
        nothing on random weights."""
        return False

    @property
    def scores_examples(self) -> bool:
        """False for a selection that gives every example the same score (keep everything)."""
        return True

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

    @property
    def scores_with_final_model(self) -> bool:
        """Whether ``dynamics_from``'s final weights replace the stage's model while scoring; scorers
        that load that stage's checkpoints themselves (CLUES, LESS, LQS) do not need them."""
        return self.needs_model

    def score(self, ctx: SelectionContext) -> np.ndarray:
        """One score per training example, higher = keep."""
        return np.zeros(len(ctx.train))

    def keep(self, scores: np.ndarray) -> np.ndarray:
        """The kept mask for the rules that read scores only (all, top, threshold)."""
        scores = _finite(scores)
        if self.keep_rule == "all":
            return np.ones(len(scores), dtype=bool)
        if self.keep_rule == "threshold":
            return scores >= self.threshold
        if self.keep_rule == "top":
            if self.count is not None and self.count > len(scores):
                raise UserError("selection.count", self.count, f"exceeds the {len(scores)} training examples")
            k = self.count if self.count is not None else int(np.floor(self.fraction * len(scores)))
            return top_k_mask(scores, k)
        raise UserError("selection.keep_rule", self.keep_rule, "needs the selection context; call select(ctx)")

    def keep_in(self, ctx: SelectionContext, scores: np.ndarray) -> tuple[np.ndarray, dict]:
        """The kept mask for any rule, and what the rule measured (e.g. the anchor threshold)."""
        if self.keep_rule == "anchor_quantile":
            return self._keep_above_anchor(ctx, scores)
        if self.keep_rule == "quota":
            groups = self.quota_groups(ctx)
            kept = quota_mask(_finite(scores), groups, self.quotas, self.fraction or 1.0, f"selection.quota_by={self.quota_by}")
            sizes = {str(g): [int((groups == g).sum()), int(kept[groups == g].sum())] for g in np.unique(groups)}
            return kept, {"quota_by": self.quota_by, "quota_groups": sizes}
        return self.keep(scores), {}

    def quota_groups(self, ctx: SelectionContext) -> np.ndarray:
        """Each training example's group for keep_rule=quota, as strings."""
        if self.quota_by != "cluster":
            check(self.quota_by in ctx.train.column_names, "selection.quota_by", self.quota_by,
                  f"is not a column of the training data ({sorted(ctx.train.column_names)}) nor 'cluster'")
            return np.asarray([str(v) for v in ctx.train[self.quota_by]])
        if ctx.model is None:
            raise UserError("selection.quota_by", "cluster", "clusters the model's embeddings, and this stage provides no model")
        from assay.selection.model_scores import embed, kmeans

        x = embed(ctx.model, ctx.train, ctx.tokenizer.pad_token_id, getattr(self, "batch_size", 32))
        return np.asarray([f"c{c}" for c in kmeans(x, self.quota_clusters, self.seed).labels_])

    def _keep_above_anchor(self, ctx: SelectionContext, scores: np.ndarray) -> tuple[np.ndarray, dict]:
        field_name = "selection.anchor_split"
        splits = ctx.splits or {}
        check(self.anchor_split in splits and self.anchor_split != "train", field_name, self.anchor_split, f"must name a split other than train; have {sorted(splits)}")
        anchor = splits[self.anchor_split]
        check(len(anchor) > 0, field_name, self.anchor_split, "the anchor set is empty; CLUES's threshold needs trusted examples")
        shared = set(anchor["id"]) & set(ctx.train["id"])
        check(not shared, field_name, self.anchor_split, f"shares {len(shared)} ids with train (e.g. {sorted(shared)[:3]}); the anchor set must be disjoint")
        anchor_scores = _finite(np.asarray(self.score(replace(ctx, train=anchor)), dtype=np.float64))
        threshold = float(np.quantile(anchor_scores, self.anchor_quantile))
        return _finite(scores) >= threshold, {"anchor_threshold": threshold, "anchor_size": len(anchor)}

    def select(self, ctx: SelectionContext) -> Selection:
        if self.needs_model and ctx.model is None:
            raise UserError("selection", self.name, "needs the run's model, which this stage does not provide")
        scores = np.asarray(self.score(ctx), dtype=np.float64)
        if len(scores) != len(ctx.train):
            raise ValueError(f"{self.name} gave {len(scores)} scores for {len(ctx.train)} examples")
        kept, measured = self.keep_in(ctx, scores)
        kept = np.asarray(kept, dtype=bool)
        if not kept.any():
            raise UserError("selection", self.name, f"kept no examples out of {len(ctx.train)}; keep a larger fraction or count")
        metadata = {"scorer": self.name, "keep_rule": self.keep_rule, "kept": int(kept.sum()), "pool": len(kept), **measured}
        metadata["detection"] = detection_report(ctx.train, scores, kept)
        return Selection(list(ctx.train["id"]), scores, kept, metadata)


def _finite(scores: np.ndarray) -> np.ndarray:
    """NaN scores (an example a scorer could not score) rank below every real score."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(scores), -np.inf, scores)


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
    check(not unknown, "selection.quotas", unknown, f"names groups not in the training pool ({grouping}); present: {sorted(present)}")
    mask = np.zeros(len(scores), dtype=bool)
    for group in present:
        rows = np.flatnonzero(groups == group)
        k = int(np.floor(quotas.get(group, default) * len(rows)))
        mask[rows[top_k_mask(scores[rows], k)]] = True
    return mask


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann-Whitney U; ties count half)."""
    positive = np.asarray(positive, dtype=bool)
    ranks = pd.Series(np.asarray(score, dtype=np.float64)).rank(method="average").to_numpy()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_report(train: datasets.Dataset, scores: np.ndarray, kept: np.ndarray) -> dict:
    """Each ground-truth flag present in ``train`` against the keep-scores, read as a detector where a
    low keep-score flags the noisy example (the protocol of LAVA / OpenDataVal / dattri):
    AUROC, precision@k with k = number of flagged examples, and the flagged share before / after."""
    report = {}
    scores = _finite(scores)
    for flag in FLAGS:
        if flag not in train.column_names:
            continue
        noisy = np.asarray(train[flag], dtype=bool)
        k = int(noisy.sum())
        if k == 0 or k == len(noisy):
            continue
        lowest = np.lexsort((np.arange(len(scores)), scores))[:k]
        report[flag] = {
            "auroc": auroc(noisy, -scores),
            "precision_at_k": float(noisy[lowest].mean()),
            "k": k,
            "pool_rate": float(noisy.mean()),
            "kept_rate": float(noisy[kept].mean()) if kept.any() else float("nan"),
        }
    return report


@register("selection", "none")
@dataclass
class KeepAll(SelectionConfig):
    """Keep every training example."""

    name: str = "none"
    keep_rule: str = "all"

    @property
    def scores_examples(self) -> bool:
        return False


@register("selection", "random")
@dataclass
class RandomSelection(SelectionConfig):
    """Keep a seeded uniform random subset, by fraction or by count (count wins when both are set)."""

    name: str = "random"
    fraction: Optional[float] = 0.5

    def score(self, ctx: SelectionContext) -> np.ndarray:
        # A stream of its own: the noise transforms draw default_rng(seed).random(n) over the same n
        # rows, and reusing that stream would make this "random" subset drop exactly the noisy rows.
        return np.random.default_rng([self.seed, RANDOM_SELECTION_STREAM]).random(len(ctx.train))
