"""Gradient scorers: GraNd, CLUES and LESS, on batched per-sample gradient features
(``assay.models.grads``).

CLUES and LESS sum over the checkpoints of an earlier (warm-up) stage, weighted by each checkpoint's
learning rate, with train gradients Adam-preconditioned from that checkpoint's optimizer moments.
Without ``dynamics_from`` they use the stage's starting model as the one checkpoint (weight 1,
plain gradients), which is the single-checkpoint special case of the same formula.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import ClassVar, Optional

import numpy as np
from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.dynamics.checkpoints import checkpoint_weights, load_checkpoint, stage_checkpoints
from assay.models.grads import grad_param_names, gradient_features
from assay.models.projection import PROJECTIONS
from assay.errors import check
from assay.registry import register
from assay.selection.base import SelectionContext, TargetSet
from assay.selection.scorers.model_scores import ModelScorer


@dataclass
class GradientScorer(ModelScorer):
    per_sample_gradients: ClassVar[bool] = True
    batch_size: int = 8
    params: list[str] = field(default_factory=list)
    """Name substrings of the parameters the gradients are taken over (e.g. ``[lm_head]``, ``[layers.1.]``);
    empty = the LoRA adapters when the model has them, else the last decoder layer."""
    proj_dim: int = 0
    """Random-projection dimension k (0 = the exact gradients, CLUES's ``noproj``)."""
    projection: str = "sjlt"
    """Random projection to ``proj_dim``, seeded by ``seed`` (the same map on every call and shard).
    ``sjlt``: sparse Johnson-Lindenstrauss / CountSketch, one ±1 per gradient coordinate (Kane and
    Nelson 2014, arXiv 1012.1577; GraSS, arXiv 2505.18976): O(D) memory and O(N·D) time, inner
    products unbiased with the same variance as the dense map. ``rademacher``: the dense ±1/sqrt(k)
    matrix TRAK and LESS use (Achlioptas 2003), O(N·D·k) time."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.proj_dim >= 0, "selection.proj_dim", self.proj_dim, "must be >= 0 (0 = no projection)")
        check(self.projection in PROJECTIONS, "selection.projection", self.projection, f"must be one of {list(PROJECTIONS)}")

    def features(self, model, ds, pad_id: int, adam=None) -> torch.Tensor:
        names = grad_param_names(model, self.params)
        return gradient_features(model, ds, pad_id, names, self.batch_size, self.proj_dim, self.seed, adam, self.projection)


@register("selection", "grand")
@dataclass
class GraNd(GradientScorer):
    """GraNd (Paul et al. 2021, arXiv 2107.07075): per-sample gradient norm ‖∇ℓ(x)‖₂."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Paul, Ganguli & Dziugaite 2021, Deep Learning on a Data Diet: Finding Important Examples Early in Training (NeurIPS 2021)",
        arxiv="2107.07075",
        code=None,
        defaults={
            "prefer": "easy (the paper keeps high scores): differs: large norms flag label noise; prefer=hard follows the paper",
            "proj_dim": "0 (the exact norm): follows",
        },
        deviations=(
            "The gradient is over a parameter subset (LoRA adapters, else the last decoder layer; ``params``) of the per-example "
            "mean response NLL, not over all weights.",
            "One model (the stage's, or dynamics_from's final weights) at whatever point it was trained; the paper averages over several initialisations at an early epoch (details from memory in the research note).",
            "A reproduction study found GraNd at initialisation does not reproduce; scoring refuses random weights unless "
            "allow_untrained=true.",
        ),
        checked="tests/unit/selection/test_scorers.py: equals the norm of a directly computed per-sample gradient",
        notes="No repository was read for GraNd.",
    )

    name: str = "grand"
    prefer: str = "easy"
    """``easy`` keeps small-gradient examples (large norms flag label noise); ``hard`` keeps large ones
    (the paper's pruning of easy examples)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.prefer in ("easy", "hard"), "selection.prefer", self.prefer, "must be one of ['easy', 'hard']")

    def score(self, ctx: SelectionContext) -> np.ndarray:
        norms = self.features(ctx.model, ctx.train, ctx.tokenizer.pad_token_id).norm(dim=1).numpy()
        return -norms if self.prefer == "easy" else norms


@dataclass
class TargetGradientScorer(GradientScorer, TargetSet):
    dynamics_from: Optional[str] = None
    """Run directory of the warm-up stage whose checkpoints (weights, Adam moments, learning rate)
    are summed over; empty = the stage's starting model only."""
    adam: bool = True
    """Precondition train gradients with the checkpoint's Adam moments (when the checkpoint has them)."""

    @property
    def scores_with_final_model(self) -> bool:
        return False  # reads the checkpoints of dynamics_from itself

    def for_rescoring(self, run_dir) -> "TargetGradientScorer":
        """Mid-training, the live model is the one checkpoint (weight 1, plain gradients): the
        single-checkpoint case of the same TracIn-CP sum, at the current weights."""
        return replace(self, dynamics_from=None)

    def over_checkpoints(self, ctx: SelectionContext, similarity) -> np.ndarray:
        """Σ_c w_c · similarity(train features at θ_c, target features at θ_c)."""
        pad = ctx.tokenizer.pad_token_id
        target = self.target(ctx)
        if self.dynamics_from in (None, ""):
            return similarity(self.features(ctx.model, ctx.train, pad), self.features(ctx.model, target, pad)).numpy()
        model = copy.deepcopy(ctx.model)
        names = grad_param_names(model, self.params)
        paths = stage_checkpoints(self.dynamics_from)
        lrs, sims = [], []
        for path in paths:
            lr, moments = load_checkpoint(model, path, names)
            train = self.features(model, ctx.train, pad, moments if self.adam else None)
            sims.append(similarity(train, self.features(model, target, pad)).numpy())
            lrs.append(lr)
        weights = self.weights(lrs)
        return sum(w * s for w, s in zip(weights, sims))

    def weights(self, lrs) -> np.ndarray:
        return checkpoint_weights(lrs)


@register("selection", "clues")
@dataclass
class CLUES(TargetGradientScorer):
    """CLUES (Zhao et al., NeurIPS 2024): Σ_c η_c ⟨Γ(x; θ_c), mean anchor gradient at θ_c⟩ (TracIn-CP)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Zhao et al., CLUES: Collaborative (Private-domain) High-quality Data Selection for LLMs via Training Dynamics "
              "(NeurIPS 2024; arXiv version 2025)",
        arxiv="2507.03004",
        code="Ryan0v0/CLUES@196a018: Calculate_grad_tr.py, Compute_score_tr.py, Compute_score_anc.py, as the research note reads "
             "them; not re-read",
        defaults={
            "proj_dim": "0 (CLUES: noproj_adam, no projection): follows",
            "adam": "true (Adam-preconditioned train gradients, no bias correction): follows",
            "selector": "anchor_quantile (CLUES: one global threshold from the anchor scores): follows; the statistic is assay's",
        },
        deviations=(
            "Checkpoints are the warm-up stage's saved ones, each weighted by its learning rate at saving / their number (CLUES: "
            "4 checkpoints 65 steps apart, the mean learning rate of the last logged epoch).",
            "One target set (target_split); no per-language anchor sets weighted by scoring_weight.",
            "Gradients over LoRA adapters, else the last decoder layer (CLUES: LoRA r = 16 on q, v), batched per sample instead of "
            "batch size 1.",
            "Without dynamics_from the stage's model is the single checkpoint (weight 1, plain gradients).",
        ),
        checked="tests/unit/selection/test_scorers.py: the checkpoint sum equals the single-checkpoint score times Σ_c η_c / C "
            "(identical checkpoints, plain gradients)",
    )

    name: str = "clues"

    def score(self, ctx: SelectionContext) -> np.ndarray:
        return self.over_checkpoints(ctx, lambda train, anchor: train @ anchor.mean(0))

    def weights(self, lrs) -> np.ndarray:
        # CLUES: s(x) = mean over c of η̄_c ⟨Γ, ḡ⟩, so the raw learning rates weight each checkpoint
        return np.asarray(lrs, dtype=np.float64) / len(lrs)


@register("selection", "less")
@dataclass
class LESS(TargetGradientScorer):
    """LESS (Xia et al. 2024, arXiv 2402.04333): Σ_i η̄_i cos(projected Adam train grad, target grad), mean over targets."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Xia, Malladi, Gururangan, Arora & Chen 2024, LESS: Selecting Influential Data for Targeted Instruction Tuning (ICML 2024)",
        arxiv="2402.04333",
        code="princeton-nlp/LESS: less/data_selection/collect_grad_reps.py, matching.py, as the research note reads them; not re-read",
        defaults={
            "proj_dim": "8192 (LESS default): follows",
            "projection": "sjlt (LESS: dense Rademacher through TRAK): differs: the sparse map has the same inner-product variance "
                          "at O(D) memory; projection=rademacher follows LESS",
            "adam": "true (Adam-preconditioned train gradients, plain target gradients, no bias correction): follows",
        },
        deviations=(
            "The mean over all target examples; LESS averages within each subtask and takes the max over subtasks.",
            "Checkpoint weights are the saved checkpoints' learning rates renormalised (LESS: each epoch's average learning rate, "
            "renormalised).",
            "Gradients over LoRA adapters, else the last decoder layer (LESS: LoRA r = 128 on q, k, v, o), batched per sample "
            "instead of batch size 1.",
            "Without dynamics_from the stage's model is the single checkpoint (weight 1, plain gradients).",
        ),
        checked="tests/unit/selection/test_scorers.py: scores are cosine sums (at most 1), with checkpoints, and both projections "
            "correlate with the exact-gradient scores",
        notes="Keeps the top 5% with selector=top (LESS's budget).",
    )

    name: str = "less"
    proj_dim: int = 8192
    budget: ClassVar[float] = 0.05
    """LESS keeps the top 5%."""

    def score(self, ctx: SelectionContext) -> np.ndarray:
        return self.over_checkpoints(ctx, lambda train, target: (F.normalize(train, dim=1) @ F.normalize(target, dim=1).T).mean(1))
