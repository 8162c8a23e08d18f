"""LQS: DELT's Learnability-Quality Score (Dai et al., "Data Efficacy for Language Model Training",
arXiv 2506.21545), built on PDS's optimal-control co-state (Gu et al., "Data Selection via Optimal
Control for Language Models", arXiv 2410.07064).

PDS treats the per-example data weights of a training run as controls. By Pontryagin's maximum
principle, the gradient of the dev-loss objective J = Σ_t L_dev(θ_t) with respect to the weight of
example x at step t is −η_t ⟨g_x(θ_t), λ_{t+1}⟩, where the co-state λ runs backwards in time:

    λ_T = ∇L_dev(θ_T)
    λ_t = λ_{t+1} + ∇L_dev(θ_t) − η_t H_t λ_{t+1}          (H_t: Hessian of the training loss at θ_t)

PDS scores x by η_t ⟨g_x, λ_{t+1}⟩ = η_t ‖λ_{t+1}‖ ‖g_x‖ cos(g_x, λ_{t+1}) summed over t. LQS keeps the
co-state norm and the cosine ("quality": agreement with where the target wants the weights to go)
and replaces ‖g_x(θ_t)‖ by a ratio of gradient norms across time ("learnability")::

    ct_x(t) = η_t · ‖λ_{t+1}‖ · (‖g_x(θ_t)‖ / G_x) · cos(g_x(θ_t), λ_{t+1}),        γ_x = Σ_t ct_x(t)

where G_x is ‖g_x‖ at the checkpoint the backward sweep processed just before (the next one later in
training), initialised to 1. The ratio is earlier-norm / later-norm, so an example whose gradient
shrinks as training goes on (it is being learned) is weighted up. Higher γ_x = keep.

This formula is reconstructed from the code of microsoft/DELT
(``data_scoring/lqs/annotation/grad_utils.py::jvp_single_grad`` and ``trainer_test.py``, the only
file that carries the stateful G_x); the paper's own formula is unverified, and the code keeps a
commented-out alternative with the ratio inverted (later / earlier).

How it maps onto assay:
- The trajectory is an earlier stage's saved checkpoints (``dynamics_from``), in training order, each
  with its learning rate η_t. DELT records every SGD step of a 100-step proxy run; here one
  transition of the recursion spans the steps between two saved checkpoints, and a warm-up trained
  with Adam is read through the SGD co-state (as PDS and DELT do, gradients are not preconditioned).
- As in DELT's backward pass, the last checkpoint only sets λ_T; contributions come from every earlier
  one. With a single checkpoint (no ``dynamics_from``, or a stage that saved only one) the score is the
  one-step limit, η ⟨g_x(θ), ∇L_dev(θ)⟩ with η = 1 for the stage's starting model: the same
  single-checkpoint case as CLUES / LESS.
- L_dev is the mean response loss over the target split; the training loss whose Hessian enters the
  recursion is the mean response loss over a fixed, seeded sample of the pool (DELT uses the batch of
  the recorded step; assay's warm-up draws its batches from this pool). The Hessian-vector product is
  forward-over-reverse (``jvp`` of ``grad``, DELT's ``hvp_fwdrev``), restricted, like the gradients, to
  the parameter subset ``params`` (the block of H on that subset).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar, Optional, Protocol, Sequence

import numpy as np

from assay.cards import MethodCard
from assay.dynamics.checkpoints import load_checkpoint, stage_checkpoints
from assay.errors import check
from assay.lazy import datasets, lazy_function, torch
from assay.registry import register
from assay.selection.base import SelectionContext, TargetSet
from assay.models.grads import grad_param_names, gradient_features, row_losses
from assay.models.passes import padded_batches
from assay.selection.scorers.model_scores import ModelScorer

functional_call, grad, jvp = (lazy_function("torch.func", f) for f in ("functional_call", "grad", "jvp"))

POOL_CHUNK = 256
"""Pool examples whose exact per-sample gradients are held at once (each is as long as the parameter
subset); only their inner product with λ and their norm are kept."""


class CheckpointTerms(Protocol):
    """What the backward sweep reads at one checkpoint θ_t (vectors over the parameter subset)."""

    lr: float
    """η_t."""

    def dev_grad(self) -> torch.Tensor:
        """∇L_dev(θ_t), shape [D]."""

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """H_t v, shape [D]."""

    def pool_terms(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For every pool example x: (⟨g_x(θ_t), v⟩, ‖g_x(θ_t)‖), shape [N] each."""


def learnability_quality(n_checkpoints: int, at: Callable[[int], CheckpointTerms]) -> torch.Tensor:
    """γ_x = Σ_t ct_x(t) over checkpoints 0..n−1 (training order) by the backward co-state sweep.

    ``at(t)`` gives the terms at checkpoint t; it is called once per checkpoint, latest first, and the
    terms of one checkpoint are used before the next is asked for (so ``at`` may load weights in place).
    """
    if n_checkpoints < 1:
        raise ValueError(f"the co-state sweep needs at least one checkpoint, got {n_checkpoints}")
    last = at(n_checkpoints - 1)
    lam = last.dev_grad()  # λ_T = ∇L_dev(θ_T)
    if n_checkpoints == 1:
        return last.lr * last.pool_terms(lam)[0]
    score = torch.zeros(())
    later_norm: torch.Tensor | float = 1.0  # G_x, initialised to 1 (DELT trainer_test.py)
    for t in range(n_checkpoints - 2, -1, -1):
        terms = at(t)
        dots, norms = terms.pool_terms(lam)
        # η ‖λ‖ (‖g‖ / G) cos(g, λ) = η ⟨g, λ⟩ / G
        score = score + terms.lr * dots / later_norm
        # An example with no gradient at this checkpoint (nothing to predict) keeps G = 1.
        later_norm = torch.where(norms > 0, norms, torch.ones_like(norms))
        if t > 0:  # λ_0 is never read
            lam = lam + terms.dev_grad() - terms.lr * terms.hvp(lam)
    return score


def mean_response_loss(model: torch.nn.Module, params: dict, frozen: dict, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over rows of each row's mean NLL over its response tokens: the per-sample loss of the
    gradient features, averaged. Right padding with causal attention needs no attention mask."""
    logits = functional_call(model, {**frozen, **params}, args=(), kwargs={"input_ids": input_ids, "use_cache": False}).logits
    return row_losses(logits, labels).mean()


def hessian_vector_product(model: torch.nn.Module, ds, pad_id: int, names: Sequence[str], v: torch.Tensor, batch_size: int) -> torch.Tensor:
    """H v for the mean response loss over ``ds``, H the Hessian over the parameters ``names`` (v and
    the result flattened in that order), forward-over-reverse: jvp of the gradient along v.

    The attention runs on PyTorch's math kernel: the fused CPU / flash kernels have no second
    derivative."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device = next(model.parameters()).device
    all_params = dict(model.named_parameters())
    params = {n: all_params[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in all_params.items() if n not in params}
    frozen.update(dict(model.named_buffers()))
    tangent, start = {}, 0
    for n in names:
        size = params[n].numel()
        tangent[n] = v[start : start + size].view_as(params[n]).to(device=device, dtype=params[n].dtype)
        start += size
    was_training = model.training
    model.eval()
    total = torch.zeros(len(v), dtype=torch.float32)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            for batch in padded_batches(ds, pad_id, batch_size, desc="Hessian-vector product"):
                ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
                loss_grad = grad(lambda p: mean_response_loss(model, p, frozen, ids, labels))
                _, hv = jvp(loss_grad, (params,), (tangent,))
                # the batches' mean losses, weighted by their share of ds
                total += torch.cat([hv[n].reshape(-1).float().cpu() for n in names]) * (len(ids) / len(ds))
    finally:
        model.train(was_training)
    return total


@dataclass
class _ModelTerms:
    """The sweep's terms at the weights ``model`` holds now."""

    model: torch.nn.Module
    names: list[str]
    pool: datasets.Dataset
    target: datasets.Dataset
    hessian_batch: Optional[datasets.Dataset]
    pad_id: int
    batch_size: int
    lr: float

    def chunks(self, ds):
        """Exact per-sample gradients of ``ds``, ``POOL_CHUNK`` examples at a time."""
        for start in range(0, len(ds), POOL_CHUNK):
            part = ds.select(range(start, min(start + POOL_CHUNK, len(ds))))
            yield gradient_features(self.model, part, self.pad_id, self.names, self.batch_size).float()

    def dev_grad(self) -> torch.Tensor:
        return sum(g.sum(0) for g in self.chunks(self.target)) / len(self.target)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        return hessian_vector_product(self.model, self.hessian_batch, self.pad_id, self.names, v, self.batch_size)

    def pool_terms(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dots, norms = [], []
        for g in self.chunks(self.pool):
            dots.append(g @ v)
            norms.append(g.norm(dim=1))
        return torch.cat(dots), torch.cat(norms)


@register("selection", "lqs")
@dataclass
class LQS(ModelScorer, TargetSet):
    """LQS (DELT, arXiv 2506.21545): Σ_t η_t ‖λ_{t+1}‖ (‖g_x(θ_t)‖ / G_x) cos(g_x(θ_t), λ_{t+1}); λ the PDS co-state, G_x ‖g_x‖ one checkpoint later."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Dai et al. 2025, Data Efficacy for Language Model Training (DELT), its Learnability-Quality Score; built on PDS "
              "(Gu et al., arXiv 2410.07064)",
        arxiv="2506.21545",
        code="microsoft/DELT: data_scoring/lqs/annotation/grad_utils.py (jvp_single_grad), trainer_test.py, as the research note "
             "reads them; not re-read",
        defaults={"hessian_examples": "64 (DELT: the recorded step's batch, 16 sequences of 1,024 tokens): differs: one seeded "
                                      "pool sample, the same at every checkpoint"},
        deviations=(
            "The formula is reconstructed from DELT's code; the paper's own formula is unverified, and the code keeps a "
            "commented-out alternative with the norm ratio inverted.",
            "One co-state step per saved checkpoint of the warm-up stage; DELT records every SGD step of a 100-step proxy run.",
            "An Adam warm-up is read through the SGD co-state (gradients not preconditioned, as PDS and DELT).",
            "No distillation into a 125M scorer and no z-normalising or clipping of the scores.",
            "Gradients and Hessian over a parameter subset (params).",
        ),
        checked="tests/unit/selection/test_lqs.py: the co-state sweep by hand, the Hessian-vector product against the explicit "
                "Hessian, the single-checkpoint limit, end to end over a warm-up trajectory",
        notes="Keeps half with selector=top; DELT's README example keeps r = 0.9 (selection.selector.fraction=0.9).",
    )

    name: str = "lqs"
    per_sample_gradients: ClassVar[bool] = True
    budget: ClassVar[float] = 0.5
    """Keep the top half: the budget of the other model scorers, so sweeps compare at equal data
    (DELT's README example keeps r = 0.9; ``selection.selector.fraction=0.9`` to match it)."""
    batch_size: int = 8
    params: list[str] = field(default_factory=list)
    """Name substrings of the parameters the gradients and Hessian are taken over (e.g. ``[lm_head]``);
    empty = the LoRA adapters when the model has them, else the last decoder layer."""
    dynamics_from: Optional[str] = None
    """Run directory of the warm-up stage whose checkpoints form the trajectory θ_0..θ_T; empty = the
    stage's starting model as the single checkpoint."""
    hessian_examples: int = 64
    """Pool examples (a seeded sample, the same at every checkpoint) whose mean loss has the Hessian
    H_t of the co-state recursion. DELT uses the recorded step's batch, 16 sequences of 1,024 tokens."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.hessian_examples > 0, "selection.hessian_examples", self.hessian_examples, "must be a positive integer")

    @property
    def scores_with_final_model(self) -> bool:
        return False  # reads the checkpoints of dynamics_from itself

    def for_rescoring(self, run_dir) -> "LQS":
        """Mid-training, the live model is the single checkpoint."""
        return replace(self, dynamics_from=None)

    def hessian_sample(self, pool: datasets.Dataset) -> datasets.Dataset:
        """The seeded pool sample whose mean loss has the Hessian H_t."""
        rows = np.random.default_rng(self.seed).choice(len(pool), size=min(self.hessian_examples, len(pool)), replace=False)
        return pool.select(np.sort(rows).tolist())

    def score(self, ctx: SelectionContext) -> np.ndarray:
        pad = ctx.tokenizer.pad_token_id
        target = self.target(ctx)
        if self.dynamics_from in (None, ""):
            model, paths = ctx.model, []
        else:
            model, paths = copy.deepcopy(ctx.model), stage_checkpoints(self.dynamics_from)
        names = grad_param_names(model, self.params)
        hessian_batch = self.hessian_sample(ctx.train) if len(paths) > 1 else None  # one checkpoint: no recursion

        def at(t: int) -> _ModelTerms:
            lr = load_checkpoint(model, paths[t], names)[0] if paths else 1.0
            return _ModelTerms(model, names, ctx.train, target, hessian_batch, pad, self.batch_size, lr)

        return learnability_quality(max(len(paths), 1), at).double().numpy()
