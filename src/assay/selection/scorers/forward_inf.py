"""Forward-INF (Ko et al., CVPR 2024, arXiv 2402.08922): influence from forward passes, by the
Mirrored Influence Hypothesis.

The forward (train→test) leave-one-out influence of a training example zᵢ on a test set V,
ℓ(V; A(D∖{zᵢ})) − ℓ(V; A(D)), is hypothesised to rank the training examples as the *mirrored*
(test→train) influence does,

    I*(V→zᵢ) = ℓ(zᵢ; A(D)) − ℓ(zᵢ; A(D ∪ V)),

how much zᵢ's loss drops once V is added to training. Forward-INF replaces the retraining A(D ∪ V)
by a few optimizer steps on V from the trained model θ̂, and scores every training example with one
forward pass before and one after:

    sᵢ = ℓ(zᵢ; θ̂) − ℓ(zᵢ; θ_K),   θ_K = K steps on V from θ̂.

Large positive sᵢ: zᵢ is a proponent of V (training on V made zᵢ more likely). Here V is the target
set the other target scorers use (``target_split``, default the trusted ``val`` split) and ℓ is each
example's mean response NLL given its prompt. The K steps are full-batch steps on the mean loss over
V, the group form of the authors' ``LOO-DualLOO-Group-*.ipynb`` (Dual(V→G) = ℓ(G; A(D∪V)) − ℓ(G; A(D)),
scored here with the opposite sign so that higher = keep). The backward cost is K passes over V;
the pool costs two forward passes per example, whatever its size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.errors import check
from assay.models.passes import padded_batches
from assay.models.probe import OPTIMIZERS, example_losses, probe_steps
from assay.registry import register
from assay.selection import SelectionContext, TargetSet
from assay.selection.scorers.model_scores import ModelScorer

DIRECTIONS = ("descent", "ascent")


@register("selection", "forward_inf")
@dataclass
class ForwardINF(ModelScorer, TargetSet):
    """Forward-INF (Ko et al. 2024, arXiv 2402.08922): loss drop of each example after K steps on the target set."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Ko, Kang, Shi, Jin, Yu & Jia 2024, The Mirrored Influence Hypothesis: Efficient Data Influence Estimation by "
              "Harnessing Forward Passes (CVPR 2024)",
        arxiv="2402.08922",
        code="reds-lab/Forward-INF@0dee72e: data-leakage/FINF-Duplication-ResNet18-main.ipynb (the per-query step, lr_lst/epoch_lst, "
             "the |Δ| score), LOO-DualLOO-Group-Mislabel-Nonconvex-*-mnist-Copy2.ipynb (the group Dual(V→G))",
        defaults={
            "steps": "1 (the leakage notebook: range(1, best_epoch) with best_epoch = 2, one step): follows",
            "lr": "5e-3 (the notebook's lr_lst = [5e-3], tuned on 100 held-out queries there): follows",
            "optimizer": "adam (the notebook: optim.Adam on a fresh copy): follows; sgd is the paper's θ − η Σ∇ℓ",
            "direction": "descent (the paper's mirrored influence: train on V, sᵢ = ℓ before − ℓ after): follows the paper; the "
                         "leakage notebook unlearns by ascent, direction=ascent",
            "absolute": "false (the paper's signed score); the leakage notebook scores |Δ|, absolute=true",
        },
        deviations=(
            "One fine-tune on the whole target set (the group Dual(V→G) of the authors' group notebooks) instead of one per test "
            "query: a selection scorer ranks the pool for a target set, and a copy per query would cost a forward sweep of the "
            "pool per query.",
            "The steps run in eval mode (no dropout); the notebook's unlearning runs in train() mode, which there updates "
            "BatchNorm statistics (the research note's pitfall); the tiny Llama has neither dropout nor BatchNorm.",
            "No sphere perturbation of an already-fitted query (the notebook moves an image whose loss is < 5e-3 to a random point "
            "at radius 3.0); a text example has no such neighbourhood.",
            "ℓ is the mean NLL of the response given the prompt (the notebook: cross-entropy of an image's class).",
        ),
        checked="tests/unit/selection/test_forward_inf.py: against the closed-form loss drop of a bigram model after one SGD or "
                "Adam step (duplicates of the targets score highest, examples sharing no parameter with them exactly 0); "
                "tests/integration/test_selection_runs.py: selection=forward_inf end to end",
        notes="Cost per pool example: two forward passes (before, after); plus steps × |target| forward-backward passes once. "
              "The seconds per example are in the selection metadata (cost). Keeps half with selector=top.",
    )

    name: str = "forward_inf"
    steps: int = 1
    """K: optimizer steps on the target set, each one full-batch step on its mean loss."""
    lr: float = 5e-3
    """Learning rate η of the K steps."""
    optimizer: str = "adam"
    """``adam`` (a fresh torch Adam, as the authors' notebook) or ``sgd`` (θ ← θ − η∇, the paper's formula)."""
    direction: str = "descent"
    """``descent``: train on the targets, sᵢ = ℓ before − ℓ after (the paper's mirrored influence). ``ascent``:
    unlearn the targets (the leakage notebook), sᵢ = ℓ after − ℓ before, so proponents score high either way."""
    absolute: bool = False
    """Score |sᵢ| (the leakage notebook's ranking): proponents and opponents alike rank high."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.steps >= 1, "selection.steps", self.steps, "must be a positive number of optimizer steps")
        check(self.lr > 0, "selection.lr", self.lr, "must be > 0")
        check(self.optimizer in OPTIMIZERS, "selection.optimizer", self.optimizer, f"must be one of {list(OPTIMIZERS)}")
        check(self.direction in DIRECTIONS, "selection.direction", self.direction, f"must be one of {list(DIRECTIONS)}")

    def score(self, ctx: SelectionContext) -> np.ndarray:
        pad = ctx.tokenizer.pad_token_id
        target = self.target(ctx)
        started = time.perf_counter()
        before = example_losses(ctx.model, padded_batches(ctx.train, pad, self.batch_size, desc="forward_inf: pool losses before"))
        swept = time.perf_counter()
        batches = list(padded_batches(target, pad, self.batch_size, desc="forward_inf: target batches"))
        tuned = probe_steps(ctx.model, batches, self.steps, self.lr, self.optimizer, ascent=self.direction == "ascent")
        stepped = time.perf_counter()
        after = example_losses(tuned, padded_batches(ctx.train, pad, self.batch_size, desc="forward_inf: pool losses after"))
        done = time.perf_counter()
        del tuned
        drop = before - after
        scores = drop if self.direction == "descent" else -drop
        n = max(1, len(ctx.train))
        self.cost = {
            "target_examples": len(target),
            "steps_seconds": stepped - swept,
            "forward_seconds": (swept - started) + (done - stepped),
            "forward_passes_per_example": 2,
            "forward_seconds_per_example": ((swept - started) + (done - stepped)) / n,
        }
        return np.abs(scores) if self.absolute else scores
