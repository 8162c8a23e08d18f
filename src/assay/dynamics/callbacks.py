"""Lightning callbacks that record training dynamics into the per-sample store."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from assay.dynamics.store import PerSampleStore


class PerSampleRecorder(pl.Callback):
    """Writes the objective's per-sample loss and metrics for every training batch it sees.

    The values come from the training step itself (``outputs["per_sample"]``), so recording costs a
    device-to-host copy and no extra forward pass. Ground-truth noise flags are copied along when
    the data has them, so any record can be checked against them.
    """

    FLAGS = ("is_flipped", "is_corrupted")

    def __init__(self, store: PerSampleStore, every_n_steps: int = 1, flush_every: int = 200):
        self.store, self.every_n_steps, self.flush_every = store, every_n_steps, flush_every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
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
        for flag in self.FLAGS:
            if flag in batch:
                columns[flag] = batch[flag].bool().cpu().tolist()
        self.store.append(step, columns)
        if step % self.flush_every == 0:
            self.store.flush()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.store.truncate_after(int(checkpoint["global_step"]))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.store.flush()

    def on_train_end(self, trainer, pl_module) -> None:
        self.store.flush()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.store.flush()
