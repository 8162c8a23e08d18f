"""Re-scoring during training (``selection.rescore_every=k``): every k epochs the pool is scored again
from the current model or this run's own training dynamics, and the next epochs train on the new
selection in the ordering's order for it.

This is the loop the static recipes approximate with a separate warm-up: LESS and CLUES score with
the weights of a short earlier run, cartography and forgetting with its per-sample records. Scoring
the live run instead lets the selection follow what the model has learned so far (the "dynamic"
variants of data pruning, e.g. Raju et al. 2021, arXiv 2111.12621; Diversify-and-Conquer's rounds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl

from assay.run.distributed import once
from assay.selection.base import Scorer, SelectionContext


class Rescoring(pl.Callback):
    """At the end of every ``every``-th epoch: flush the per-sample store, score the pool with the
    live model, select, and hand the kept rows (and their ordering keys) to the sampler. Each
    re-selection is saved as ``selection_epoch<k>.parquet`` (+ ``.json``) and listed in ``history``."""

    def __init__(self, selection: Scorer, ordering, splits, tokenizer, run_dir: Path, cache_dir: Optional[Path] = None):
        self.selection, self.ordering = selection, ordering
        self.splits, self.tokenizer = splits, tokenizer
        self.run_dir, self.cache_dir = Path(run_dir), cache_dir
        self.every = int(selection.rescore_every)
        self.history: list[dict[str, Any]] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        # The kept set can change size between epochs; Lightning then needs a fresh train loader
        # (same sampler object) to count the epoch's batches again.
        trainer.reload_dataloaders_every_n_epochs = 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every or trainer.global_step >= trainer.max_steps > 0:
            return  # not a re-scoring epoch, or no epoch follows
        if any(h["epoch"] == epoch for h in self.history):
            return  # already re-scored at this boundary (a run resumed on it)
        self.rescore(trainer, pl_module, epoch)

    def rescore(self, trainer, pl_module, epoch: int) -> dict[str, Any]:
        for callback in trainer.callbacks:  # scorers that read a store read this run's, up to now
            store = getattr(callback, "store", None)
            if store is not None and hasattr(store, "flush"):
                store.flush()
        if trainer.world_size > 1:
            trainer.strategy.barrier("assay-rescore-flush")  # every rank's records are on disk before anyone reads
        train = self.splits["train"]
        scorer = self.selection.for_rescoring(self.run_dir)
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        clip = trainer.gradient_clip_val
        ctx = SelectionContext(train, self.splits, pl_module.model, self.tokenizer, self.run_dir, self.cache_dir,
                               optimizer, None if clip is None else float(clip))
        selection = once(lambda: scorer.select(ctx))  # rank 0 selects, every rank gets the same kept rows
        selection.metadata["epoch"] = epoch
        path = self.run_dir / f"selection_epoch{epoch}.parquet"
        if trainer.is_global_zero:  # every rank scores the same weights; one writes the record
            selection.save(path)
        sampler = trainer.datamodule.sampler
        sampler.reselect(selection.kept_rows, self.ordering.keys(train, selection.scores), epoch)
        entry = {"epoch": epoch, "global_step": trainer.global_step, "file": path.name, **selection.metadata}
        self.history.append(entry)
        return entry

    def state_dict(self) -> dict:
        state: dict[str, Any] = {"history": self.history}
        if hasattr(self.selection, "state_dict"):  # a scorer that learns across re-selections (MATES's influence model)
            state["scorer"] = self.selection.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))
        if "scorer" in state and hasattr(self.selection, "load_state_dict"):
            self.selection.load_state_dict(state["scorer"])


def rescoring_callbacks(selection: Scorer, ordering, splits, tokenizer, run_dir: Path, cache_dir=None) -> list[Rescoring]:
    """The re-scoring callback when ``selection.rescore_every`` is set, else nothing."""
    if not selection.rescores:
        return []
    return [Rescoring(selection, ordering, splits, tokenizer, run_dir, cache_dir)]
