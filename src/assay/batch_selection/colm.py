"""CoLM: mini-batch coresets for memory-efficient training on data mixtures (Nguyen et al., ICLR 2025,
arXiv 2407.19580). Each step draws r·b examples and trains on b of them whose (Adam-normalised,
zeroth-order, sparsified) last-layer gradients best cover the batch's, keeping small sources whole:
the backward pass is that of b examples, the gradient close to that of r·b."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from assay.batch_selection.base import BatchSelection
from assay.cards import MethodCard
from assay.errors import UserError, check
from assay.registry import register


@register("batch_selection", "colm")
@dataclass
class CoLM(BatchSelection):
    """CoLM (Nguyen et al. 2025): train on a facility-location coreset of b out of r·b drawn, small sources kept whole."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Nguyen, Yang, Anand, Yang, Mirzasoleiman 2025, Mini-batch Coresets for Memory-efficient Language Model Training on Data Mixtures (ICLR)",
        arxiv="2407.19580",
        code="BigML-CS-UCLA/CoLM@395abfd: colm/train/subset_trainer_distributed.py (efficient_mezo trainer, select_masking), colm/train/facility_location.py",
        defaults={
            "ratio": "2 (scripts: small_batch_ratio 0.5, 128 -> 64); follows",
            "small_share": "the paper keeps a fixed list of small sources (keep_sources, 10 of MathInstruct's 14); differs: every source under 5% of the drawn batch",
            "dim": "2560 (zo_dim, Phi-2's LoRA v_proj); differs: 512 at our scale",
            "eps": "1e-3 (mezo_eps); follows",
            "directions": "1 (one z per step); follows",
            "fixed_direction": "the code draws z once (zo_random_seed in __init__); differs: false, z redrawn every step",
            "adam": "true (mezo_optim=adam); follows",
        },
        deviations=(
            "z is redrawn every step (from the run seed and the step, the same on every process): with the code's single z every "
            "example's estimate c_i·z is collinear with every other's at every step; fixed_direction=true is the code's behaviour",
            "Adam normalisation uses the optimizer's own moments m, v of the tracked parameters (true-gradient history, bias-corrected "
            "with its step count), where the code keeps a separate history of the selected examples' ZO estimates: an approximation "
            "(the ZO estimate is unbiased for the gradient, so both histories track the same mean); before the first step the moments are 0",
            "the efficient path (run the blocks below the last once, the last block twice) is the code's, written for any model whose blocks "
            "sit in one ModuleList (BelowOnce: the blocks below are swapped for a replay of their first output) where the code's needs a "
            "Phi-specific decomposer; the losses are the objective's own, so any objective (a pair is one element) is scored",
            "small sources: every source under small_share of the drawn batch is kept whole (the smallest first, while they fit in b), not a "
            "fixed list; the budget of the others is proportional as in the code (floor, then +1 to the smallest)",
            "several processes: each selects b of its own r·b (the same z, weights and moments on every rank, so the rule is the same), where the "
            "code gathers every representation on rank 0 and broadcasts indices: no gather per step and every rank trains exactly b",
            "an example whose representation is zero stays a candidate (similarity 0 to all) where the code drops NaN/zero rows",
            "the model is in eval mode (dropout off) for the two perturbed passes, as MeZO's zo_forward",
            "unweighted (the code's default data_selection_method=submodlib); the facility-location weights of weightedsubmodlib are not offered",
        ),
        checked="tests/unit/batch_selection/test_colm.py: lazy greedy vs hand-derived gains and plain greedy, the budgets, Adam "
                "normalisation and the ZO estimate against hand-derived numbers and the exact directional derivative, the efficient "
                "path against the whole model's losses; "
                "tests/integration/test_colm_run.py: SFT and DPO runs train b of r·b a step",
        notes="Tracks the last block's attention V-projection (its LoRA weights when LoRA adapts it, else its full weight). Selection "
              "costs one no-grad forward pass of the drawn batch a step, plus 2·directions − 1 passes of its last block and LM head. train/coreset/<source> logs how many of each "
              "source were trained, train/coreset/drawn the drawn batch, train/coreset/select_s the selection time. With "
              "weights held in bf16 (trainer.precision=bf16-true) a step of eps = 1e-3 is near the weights' resolution: use mixed precision.",
    )

    name: str = "colm"
    ratio: float = 2.0
    """r: each batch draws round(r·b) examples (b = ``data.batch_size``) and trains on a coreset of b; >= 1."""
    small_share: float = 0.05
    """A source with less than this share of the drawn batch is kept whole (CoLM's fix for imbalanced mixtures), in [0, 1]."""
    dim: int = 512
    """d: coordinates kept per source, those of largest |mean| normalised gradient (the paper's zo_dim)."""
    eps: float = 1e-3
    """ε of the central difference [L(θ+εz) − L(θ−εz)]/(2ε) (MeZO's scale)."""
    directions: int = 1
    """Random directions z averaged per step: each costs two forward passes of the drawn batch."""
    fixed_direction: bool = False
    """Draw z once for the whole run (the authors' code) instead of afresh every step."""
    adam: bool = True
    """Match Adam updates m̂/(√v̂+ε) rather than raw gradients (CoLM's second fix); false: the raw ZO estimates."""

    def __post_init__(self) -> None:
        check(self.ratio >= 1, "batch_selection.ratio", self.ratio,
              "the coreset (data.batch_size examples) would be larger than its batch (ratio x data.batch_size); ratio must be >= 1")
        check(0 <= self.small_share <= 1, "batch_selection.small_share", self.small_share, "must be a share in [0, 1]")
        check(self.dim >= 1, "batch_selection.dim", self.dim, "must be a positive integer")
        check(self.eps > 0, "batch_selection.eps", self.eps, "must be > 0")
        check(self.directions >= 1, "batch_selection.directions", self.directions, "must be a positive integer")

    def drawn(self, batch_size: int) -> int:
        return max(batch_size, round(self.ratio * batch_size))

    def check_run(self, spec: Any) -> None:
        strategy = str(spec.trainer.strategy).lower()
        if "fsdp" in strategy or "deepspeed" in strategy:
            raise UserError("trainer.strategy", spec.trainer.strategy, "shards the parameters, and batch_selection=colm perturbs the whole "
                            "last V-projection on every process; use strategy=ddp")
        if getattr(spec.objective.controller, "per_optimizer_batch", False) and spec.trainer.accumulate_grad_batches > 1:
            raise UserError("batch_selection", self.name, f"objective={spec.objective.name} plans its statistics over the drawn micro-batches, "
                            "not the coresets trained; use trainer.accumulate_grad_batches=1")

    def build(self, model: Any, size: int, seed: int):
        from assay.batch_selection.coreset_selector import CoresetSelector, last_v_projection  # torch and Lightning: at run time only

        last_v_projection(model)  # the model must have one: refused before training starts
        return CoresetSelector(self, size, seed)
