"""CoLM's selection at run time (:mod:`assay.batch_selection.colm` holds its options and card): the
last V-projection it tracks, the efficient perturbed passes (the blocks below the last run once), the
optimizer's Adam moments, and the Lightning callback that picks each step's coreset and logs it."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable, Optional

import pytorch_lightning as pl
import torch

from assay.batch_selection.coreset import adam_normalise, coreset_positions, zo_gradients
from assay.errors import UserError


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
    """Chooses each training batch's coreset (``select``, called by the module) and logs what it chose; ``config`` is the
    run's :class:`assay.batch_selection.colm.CoLM`."""

    def __init__(self, config: Any, size: int, seed: int):
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
