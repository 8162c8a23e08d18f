"""The one sampler every ordering goes through: resumable, and sharded after ordering."""

from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from assay.ordering.base import OrderingConfig


class OrderedSampler(Sampler[int]):
    """Yields dataset rows in the ordering's permutation for the current epoch.

    State is (epoch, rows already consumed in that epoch), saved in every checkpoint, so a resumed
    run continues exactly where it stopped. When the selection is re-scored during training
    (``selection.rescore_every``) the active rows and keys travel in the state too, with the epoch
    whose end produced them; the fingerprint stays that of the run's initial selection and order.
    With several ranks, each takes every ``world``-th row of the same global order (order first,
    shard second), so the global data order does not depend on the number of devices: rank r's
    k-th batch of b rows holds global positions r, r+W, ... of the block [kWb, (k+1)Wb), and the W
    batches of one step together are the same rows a one-process run with batch W·b takes at that
    step. When the epoch's rows do not divide by W, its last ``n mod W`` rows in the order are
    dropped (at most W-1 per epoch), so every rank runs the same number of batches (an uneven
    count would leave one rank waiting in a collective for ever). Padding instead would repeat
    rows within an epoch and record one (id, step) twice.
    """

    def __init__(self, ordering: OrderingConfig, rows: np.ndarray, scores: np.ndarray, rank: int = 0, world: int = 1):
        self.ordering, self.rows, self.scores = ordering, np.asarray(rows), np.asarray(scores)
        self.rank, self.world = rank, world
        self.epoch, self.consumed = 0, 0
        self.selection_epoch: int | None = None
        """Epoch at whose end the active rows were re-selected (None = the initial selection)."""
        self._fingerprint: str | None = None
        self._fingerprint = self.fingerprint()

    def reselect(self, rows: np.ndarray, scores: np.ndarray, epoch: int) -> None:
        """Serve ``rows`` (keyed by ``scores``) from the next epoch on; called at an epoch boundary."""
        self.rows, self.scores, self.selection_epoch = np.asarray(rows), np.asarray(scores), epoch

    def permutation(self, epoch: int) -> np.ndarray:
        return self.ordering.order(self.rows, self.scores, epoch)

    def shard(self, perm: np.ndarray) -> np.ndarray:
        """This rank's rows of a global order: every ``world``-th, after dropping the remainder."""
        return perm[: len(perm) // self.world * self.world][self.rank :: self.world]

    def __len__(self) -> int:
        return len(self.rows) // self.world

    def __iter__(self) -> Iterator[int]:
        perm = self.shard(self.permutation(self.epoch))
        start = self.consumed
        for row in perm[start:]:
            yield int(row)

    # ---- resume ---------------------------------------------------------------------------------
    def advance(self, n_rows: int) -> None:
        self.consumed += n_rows

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch; a resumed epoch keeps its position."""
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "consumed": self.consumed, "fingerprint": self.fingerprint(), "world": self.world}
        if self.selection_epoch is not None:
            state.update(selection_epoch=self.selection_epoch, rows=self.rows.tolist(), scores=self.scores.tolist())
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        if state.get("selection_epoch") is not None:
            self.reselect(np.asarray(state["rows"], dtype=np.int64), np.asarray(state["scores"]), int(state["selection_epoch"]))

    def fingerprint(self) -> str:
        """Hash of the first epoch's order under the initial selection: two runs that would see data
        differently differ here (re-selections are a function of training, recorded in the state)."""
        if self._fingerprint is not None:
            return self._fingerprint
        perm = np.ascontiguousarray(self.permutation(0), dtype=np.int64)
        return hashlib.sha256(perm.tobytes() + repr(self.ordering).encode()).hexdigest()[:16]
