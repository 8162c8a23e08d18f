"""CoLM: mini-batch coresets for memory-efficient training on data mixtures (Nguyen et al., ICLR 2025,
arXiv 2407.19580). Each step draws r·b examples and trains on b of them whose (Adam-normalised,
zeroth-order, sparsified) last-layer gradients best cover the batch's, keeping small sources whole:
the backward pass is that of b examples, the gradient close to that of r·b."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import pytorch_lightning as pl
import torch

from assay.batch_selection.base import BatchSelection
from assay.batch_selection.coreset import adam_normalise, coreset_positions, zo_gradients
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

    def build(self, model: Any, size: int, seed: int) -> "CoresetSelector":
        last_v_projection(model)  # the model must have one: refused before training starts
        return CoresetSelector(self, size, seed)


def last_v_projection(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters CoLM represents an example by: those of the last attention V-projection (the
    last module named ``v_proj``), its trainable ones (LoRA's A and B) where it has any."""
    found = [module for name, module in model.named_modules() if name.rsplit(".", 1)[-1] == "v_proj"]
    if not found:
        raise UserError("batch_selection", "colm", "represents an example by the gradient of the last block's attention V-projection "
                        "(a module named v_proj), and this model has none")
    params = list(found[-1].parameters())
    return [p for p in params if p.requires_grad] or params


class BelowOnce:
    """Per-sample losses whose blocks below the perturbed V-projection run once: only the V-projection's
    block moves between the perturbed passes, so what the blocks below it return is the same every
    time. The first call runs the whole model and keeps, in call order, each output of the block just
    below; later calls put stand-ins in place of the blocks below (the lower ones pass their input on,
    the one just below replays its kept output). The authors' efficient path (run to the penultimate
    layer once, the last layer twice), for any model whose blocks sit in one ModuleList."""

    def __init__(self, model: torch.nn.Module, loss: Callable[[], torch.Tensor]):
        self.loss = loss
        self.blocks, self.k = _blocks_of_last_v_projection(model)
        self.kept: Optional[list] = None

    def __call__(self) -> torch.Tensor:
        if self.blocks is None or self.k == 0:
            return self.loss()
        below = self.blocks[self.k - 1]
        if self.kept is None:
            kept: list = []
            handle = below.register_forward_hook(lambda module, args, out: kept.append(out))
            try:
                out = self.loss()
            finally:
                handle.remove()
            self.kept = kept
            return out
        originals = [self.blocks[i] for i in range(self.k)]
        replay = iter(self.kept)
        for i in range(self.k - 1):
            self.blocks[i] = _PassOn()
        self.blocks[self.k - 1] = _Replay(replay)
        try:
            return self.loss()
        finally:
            for i, block in enumerate(originals):
                self.blocks[i] = block


class _PassOn(torch.nn.Module):
    def forward(self, *args, **kwargs):
        return args[0] if args else kwargs["hidden_states"]


class _Replay(torch.nn.Module):
    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, *args, **kwargs):
        return next(self.outputs)


def _blocks_of_last_v_projection(model: torch.nn.Module) -> tuple[Optional[torch.nn.ModuleList], int]:
    """The ModuleList of blocks that holds the last V-projection, and that block's index (None, 0: no such list)."""
    name = [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] == "v_proj"][-1]
    parts = name.split(".")
    modules = dict(model.named_modules())
    for i in range(len(parts) - 1, 0, -1):
        parent = modules.get(".".join(parts[:i]))
        if parts[i].isdigit() and isinstance(parent, torch.nn.ModuleList):
            return parent, int(parts[i])
    return None, 0


def adam_state(optimizer: Optional[torch.optim.Optimizer], params: list[torch.nn.Parameter]):
    """(m, v, step, betas, eps) of Adam for ``params`` flattened in order; m = v = None and step 0
    before the first step (or where the optimizer does not hold them: a frozen weight)."""
    betas, eps = (0.9, 0.999), 1e-8
    if optimizer is None:
        return None, None, 0, betas, eps
    group = next((g for g in optimizer.param_groups if any(q is params[0] for q in g["params"])), optimizer.param_groups[0])
    betas, eps = tuple(group.get("betas", betas)), group.get("eps", eps)
    states = [optimizer.state.get(p, {}) for p in params]
    if not all("exp_avg" in s for s in states):
        return None, None, 0, betas, eps
    m = torch.cat([s["exp_avg"].flatten().float() for s in states])
    v = torch.cat([s["exp_avg_sq"].flatten().float() for s in states])
    return m, v, int(states[0]["step"]), betas, eps


class CoresetSelector(pl.Callback):
    """Chooses each training batch's coreset (``select``, called by the module) and logs what it chose."""

    def __init__(self, config: CoLM, size: int, seed: int):
        self.config, self.size, self.seed = config, size, seed
        self.last: dict[str, float] = {}
        self._sources: set[str] = set()

    def generator(self, step: int) -> torch.Generator:
        """z's generator: seeded by the run seed and, unless ``fixed_direction``, the step (resumes draw the same z)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + (0 if self.config.fixed_direction else step + 1))

    def positions(self, model: torch.nn.Module, batch: dict, per_sample_loss: Callable[[dict], torch.Tensor],
                  optimizer: Optional[torch.optim.Optimizer], step: int) -> list[int]:
        """Positions in ``batch`` of its coreset of ``size`` (ascending)."""
        started = time.perf_counter()
        cfg = self.config

        def representations(candidates: list[int]) -> torch.Tensor:
            params = last_v_projection(model)
            training = model.training
            model.eval()
            try:
                losses = BelowOnce(model, lambda: per_sample_loss(batch))
                g = zo_gradients(params, losses, cfg.eps, self.generator(step), cfg.directions)[candidates]
            finally:
                model.train(training)
            if not cfg.adam:
                return g
            m, v, taken, betas, eps = adam_state(optimizer, params)
            return adam_normalise(g, m, v, taken, betas, eps)

        sources = [str(s) for s in batch["sources"]]
        chosen = coreset_positions(sources, self.size, cfg.small_share, cfg.dim, representations)
        self._sources |= set(sources)
        counts = Counter(sources[i] for i in chosen)
        self.last = {"drawn": len(sources), "select_s": time.perf_counter() - started, **{s: counts.get(s, 0) for s in self._sources}}
        return chosen

    def select(self, module: Any, batch: dict) -> dict:
        """The coreset of a drawn training batch, collated anew from its rows (any layout; a pair is one
        element) and on the module's device; ``drawn`` says how many rows the batch consumed."""
        def loss(b: dict) -> torch.Tensor:
            return module.objective.compute(module.model, module.with_reference(b), training=False, controller=module.controller).loss

        optimizers = module.trainer.optimizers
        n = len(batch["ids"])
        chosen = self.positions(module.model, batch, loss, optimizers[0] if optimizers else None, module.global_step)
        if len(chosen) < n:
            rows = [int(batch["index"][i]) for i in chosen]
            batch = module.transfer_batch_to_device(module.trainer.datamodule.collate_rows(rows), module.device, 0)
        batch["drawn"] = n
        return batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.last and pl_module._logger_writes_this_step():
            pl_module.log_dict({f"train/coreset/{k}": float(v) for k, v in self.last.items()}, batch_size=len(batch["ids"]))
