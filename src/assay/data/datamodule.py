"""Serves the run's examples: the kept training rows in the ordering's order, val and test as they are."""

from __future__ import annotations

from typing import Any, Optional

import datasets
import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from assay.data.collate import Collator
from assay.errors import UserError
from assay.ordering import OrderingConfig
from assay.ordering.sampler import OrderedSampler


class Rows(Dataset):
    """Row access into a tokenized split (the sampler decides which rows, and in what order)."""

    def __init__(self, ds: datasets.Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.ds[int(i)]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A whole batch in one Arrow read (the DataLoader calls this when it exists): reading rows
        one by one costs a table lookup and conversion per row, a visible share of a CPU step."""
        columns = self.ds[[int(i) for i in indices]]
        return [dict(zip(columns, values)) for values in zip(*columns.values())]


class StepBatches:
    """Index batches of ``batch_size`` rows drawn ``per_step`` at a time from ``sampler``: the
    micro-batches of one optimizer step (gradient accumulation) are known when its first is served,
    so a statistic of the whole optimizer batch (β-DPO's) can be computed before any of them trains.
    The same rows in the same order as ``DataLoader(batch_size=...)`` over ``sampler``."""

    def __init__(self, sampler, batch_size: int, per_step: int):
        self.sampler, self.batch_size, self.per_step = sampler, batch_size, per_step
        self.steps: dict[tuple[int, ...], list[list[int]]] = {}

    def __iter__(self):
        import itertools

        rows = iter(self.sampler)
        while True:
            block = [int(r) for r in itertools.islice(rows, self.batch_size * self.per_step)]
            if not block:
                return
            chunks = [block[i : i + self.batch_size] for i in range(0, len(block), self.batch_size)]
            if len(self.steps) > 8:  # the loader runs at most one batch ahead of training
                self.steps.pop(next(iter(self.steps)))
            self.steps[tuple(chunks[0])] = chunks
            yield from chunks

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


class AssayDataModule(pl.LightningDataModule):
    def __init__(
        self,
        splits: datasets.DatasetDict,
        kept_rows: np.ndarray,
        scores: np.ndarray,
        ordering: OrderingConfig,
        data_format: str,
        batch_size: int,
        eval_batch_size: int,
        pad_id: int,
        allow_order_change: bool = False,
        collation: Optional[dict] = None,
    ):
        """``collation``: the objective's batch layout (``ObjectiveConfig.collation``), passed to every ``Collator``."""
        super().__init__()
        self.splits, self.format, self.collation = splits, data_format, dict(collation or {})
        self.batch_size, self.eval_batch_size, self.pad_id = batch_size, eval_batch_size, pad_id
        self.sampler = OrderedSampler(ordering, kept_rows, scores)
        self.allow_order_change = allow_order_change
        self.step_batches: Optional[int] = None
        """Set to the micro-batches per optimizer step when the objective needs the whole optimizer batch first."""
        self._step_loader: Optional[StepBatches] = None

    def setup(self, stage: str) -> None:
        """Under DDP each rank serves its shard of the global order (``OrderedSampler``) and of the
        held-out sets (every ``world``-th row; the module gathers the per-sample values)."""
        if self.trainer is not None:
            self.sampler.rank, self.sampler.world = self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        collate = Collator(self.pad_id, self.format, with_generation=False, **self.collation)
        if self.step_batches:
            self._step_loader = StepBatches(self.sampler, self.batch_size, self.step_batches)
            return DataLoader(Rows(self.splits["train"]), batch_sampler=self._step_loader, collate_fn=collate)
        return DataLoader(Rows(self.splits["train"]), batch_size=self.batch_size, sampler=self.sampler, collate_fn=collate)

    def optimizer_batch(self, ids: list[str]) -> list[dict]:
        """Every micro-batch (collated) of the optimizer step whose first micro-batch holds ``ids``."""
        if self._step_loader is None:
            raise RuntimeError("optimizer_batch() needs step_batches set before the train loader is built")
        train = self.splits["train"]
        if not hasattr(self, "_row_of_id"):
            self._row_of_id = {str(i): r for r, i in enumerate(train["id"])}
        key = tuple(self._row_of_id[str(i)] for i in ids)
        return [self.collate_rows(c) for c in self._step_loader.steps[key]]

    def collate_rows(self, rows: list[int]) -> dict:
        """Training rows ``rows`` (positions in the train split) collated as a training batch (on the CPU)."""
        return Collator(self.pad_id, self.format, with_generation=False, **self.collation)(Rows(self.splits["train"]).__getitems__(rows))

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            Rows(self.splits[split]),
            batch_size=self.eval_batch_size,
            sampler=eval_shard(len(self.splits[split]), self.sampler.rank, self.sampler.world),
            collate_fn=Collator(self.pad_id, self.format, with_generation=True, **self.collation),
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    # ---- the sampler position travels in every checkpoint --------------------------------------
    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        saved = state["sampler"]
        current = self.sampler.fingerprint()
        if saved["fingerprint"] != current and not self.allow_order_change:
            raise UserError(
                "resume",
                saved["fingerprint"],
                f"the checkpoint was trained on a different data order (now {current}); "
                "set allow_order_change=true to resume anyway",
            )
        if int(saved.get("world", 1)) != self.sampler.world:
            raise UserError(
                "trainer.devices", self.sampler.world,
                f"the checkpoint was written by a run of {saved.get('world', 1)} processes; its sampler position is per process, "
                "so resume with the same number of processes",
            )
        self.sampler.load_state_dict(saved)


def eval_shard(n: int, rank: int, world: int) -> list[int]:
    """Rank ``rank``'s rows of a held-out split of ``n`` rows: every ``world``-th, padded with the
    first rows so every rank has the same count (even with fewer rows than ranks, no rank sits out
    the gather); the module counts each row once."""
    rows = list(range(n))
    if n and n % world:
        rows += [i % n for i in range(world - n % world)]
    return rows[rank::world]


class SamplerProgress(pl.Callback):
    """Counts the rows each training batch consumed, so the sampler state is exact at any step (a
    per-batch selection trains fewer than it drew: ``drawn``)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        trainer.datamodule.sampler.advance(batch.get("drawn", len(batch["ids"])))
