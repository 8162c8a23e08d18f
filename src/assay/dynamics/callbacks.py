"""Lightning callbacks that record training dynamics into the per-sample store."""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch

from assay.dynamics.store import GradientStore, PerSampleStore
from assay.data.noise import FLAGS


class StoreRecorder(pl.Callback):
    """What every recorder shares: records keyed by the optimizer step a training micro-batch belongs
    to, and a store (``self.store``) kept in step with checkpoints (flushed before one is written,
    truncated to its step on resume).

    With gradient accumulation over k micro-batches, ``global_step`` moves only after the k-th, so the
    first k-1 still read the previous step; every micro-batch of a cycle is labelled with the step its
    gradient goes into, and a part is flushed only where a step completes (two flushes of one step
    would write one file twice)."""

    store: Any

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Under DDP each rank records its own shard of every batch into its own parts.
        self.store.set_rank(trainer.global_rank, trainer.world_size)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.store.truncate_after(int(checkpoint["global_step"]))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.store.flush()
        if trainer.world_size > 1:
            # Rank 0 writes the checkpoint right after this hook: every rank's records up to its step
            # must be on disk first, or a kill in between would lose another rank's last part.
            trainer.strategy.barrier("assay-store-flush")

    def on_train_end(self, trainer, pl_module) -> None:
        self.store.flush()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.store.flush()

    def on_train_start(self, trainer, pl_module) -> None:
        self._seen_step = trainer.global_step

    def step_label(self, trainer) -> tuple[int, bool]:
        """(the step this micro-batch's gradient is part of, whether that step has just completed)."""
        step = trainer.global_step
        completed = step != getattr(self, "_seen_step", step - 1)
        self._seen_step = step
        return (step, True) if completed else (step + 1, False)


class PerSampleRecorder(StoreRecorder):
    """Writes the objective's per-sample loss and metrics for every training batch it sees.

    The values come from the training step itself (``outputs["per_sample"]``), so recording costs a
    device-to-host copy and no extra forward pass. Ground-truth noise flags are copied along when
    the data has them, so any record can be checked against them.
    """

    def __init__(self, store: PerSampleStore, every_n_steps: int = 1, flush_every: int = 200):
        self.store, self.every_n_steps, self.flush_every = store, every_n_steps, flush_every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, completed = self.step_label(trainer)
        if step % self.every_n_steps:
            return
        per_sample = outputs["per_sample"]
        n = len(batch["ids"])
        columns = {
            "id": list(batch["ids"]),
            "step": [step] * n,
            "epoch": [trainer.current_epoch] * n,
        }
        # One [K, B] device-to-host copy for the loss and every metric instead of one per column.
        names = ["loss", *per_sample.metrics]
        values = torch.stack([per_sample.loss.float(), *(v.float() for v in per_sample.metrics.values())]).cpu().tolist()
        columns.update(zip(names, values))
        for flag in FLAGS:
            if flag in batch:
                columns[flag] = batch[flag].bool().cpu().tolist()
        self.store.append(step, columns)
        if completed and step % self.flush_every == 0:
            self.store.flush()


class GradientRecorder(StoreRecorder):
    """Per-sample gradient features of the batch just trained on, at chosen optimizer steps.

    At step s (after s optimizer steps, the weights a checkpoint ``step=s`` holds) every example of
    that step's batch (all its micro-batches under gradient accumulation) gets: the norm of its
    gradient over the chosen parameters (GraNd's score, Paul et al. 2021) and a seeded random
    projection of that gradient, optionally Adam-preconditioned with the optimizer's current moments
    first (LESS's Γ, Xia et al. 2024, arXiv 2402.04333, eq. 2).
    The gradients come from the pipeline the gradient scorers use (``assay.models.grads.feature_rows``):
    one batched forward/backward per ``batch_size`` rows with module taps, in eval mode (no dropout),
    never touching the parameters' ``.grad``.
    """

    def __init__(
        self,
        store: GradientStore,
        every_n_steps: int,
        steps: Sequence[int] = (),
        params: Sequence[str] = (),
        proj_dim: int = 8192,
        projection: str = "sjlt",
        seed: int = 0,
        adam: bool = False,
        batch_size: int = 16,
        flush_every: int = 200,
    ):
        self.store, self.every_n_steps, self.steps = store, every_n_steps, set(steps)
        self.params, self.proj_dim, self.projection, self.seed = list(params), proj_dim, projection, seed
        self.adam, self.batch_size, self.flush_every = adam, batch_size, flush_every
        self.names: Optional[list[str]] = None
        self._buffer: Optional[torch.Tensor] = None
        self._pending: list[dict] = []
        self._warned = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        from assay.models.grads import grad_param_names

        super().setup(trainer, pl_module, stage)
        self.names = grad_param_names(pl_module.model, self.params, field="dynamics.params")  # a bad pattern fails before training

    def due(self, step: int) -> bool:
        return step in self.steps or (self.every_n_steps > 0 and step % self.every_n_steps == 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, completed = self.step_label(trainer)
        if not self.due(step):
            return
        # every micro-batch of an accumulated step is scored at the weights after that step, the
        # weights its checkpoint holds: micro-batches wait (as token ids) until the step completes
        self._pending.append({k: batch[k] for k in ("ids", "input_ids", "labels", *FLAGS) if k in batch})
        if not completed:
            return
        model = pl_module.model
        params = dict(model.named_parameters())
        moments = self._adam_moments(trainer, params) if self.adam else None
        if self.adam and moments is None and not self._warned:
            warnings.warn(f"dynamics.adam: the optimizer holds no Adam moments for some of {self.names}; their gradients are recorded plain")
            self._warned = True
        for micro_batch in self._pending:
            self._record(trainer, model, params, moments, step, micro_batch)
        self._pending = []
        if step % self.flush_every == 0:
            self.store.flush()

    def _record(self, trainer, model, params: dict, moments: Optional[tuple], step: int, batch: dict) -> None:
        from assay.models.grads import feature_rows

        input_ids, labels = batch["input_ids"], batch["labels"]
        rows = len(input_ids)
        width = sum(params[n].numel() for n in self.names)
        chunk = min(self.batch_size, rows)
        if self._buffer is None or self._buffer.shape != (chunk, width) or self._buffer.device != input_ids.device:
            self._buffer = torch.empty(chunk, width, device=input_ids.device)
        norms, feats = [], []
        for norm, g in feature_rows(model, input_ids, labels, self.names, chunk, self.proj_dim, self.seed, moments, self.projection, self._buffer):
            norms.append(norm)
            feats.append(g.detach().to("cpu", torch.float32, copy=True))  # unprojected rows are views of the reused buffer
        columns = {"id": list(batch["ids"]), "step": [step] * rows, "epoch": [trainer.current_epoch] * rows, "grad_norm": torch.cat(norms).float().cpu().tolist()}
        for flag in FLAGS:
            if flag in batch:
                columns[flag] = batch[flag].bool().cpu().tolist()
        self.store.append(step, columns, torch.cat(feats).numpy())

    def _adam_moments(self, trainer, params) -> Optional[tuple]:
        """The optimizer's (exp_avg, exp_avg_sq) over ``self.names``, flattened, and its betas; None
        when a chosen parameter has no moments (not optimized): the gradients are then recorded plain."""
        optimizer = trainer.optimizers[0]
        state = [optimizer.state.get(params[n], {}) for n in self.names]
        if not all("exp_avg" in s and "exp_avg_sq" in s for s in state):
            return None
        betas = tuple(optimizer.param_groups[0].get("betas", (0.9, 0.999)))
        return torch.cat([s["exp_avg"].reshape(-1) for s in state]), torch.cat([s["exp_avg_sq"].reshape(-1) for s in state]), betas
