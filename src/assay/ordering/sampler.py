"""The one sampler every ordering goes through: resumable, and sharded after ordering."""

from __future__ import annotations

import hashlib
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from assay.ordering import OrderingConfig


class OrderedSampler(Sampler[int]):
    """Yields dataset rows in the ordering's permutation for the current epoch.

    State is (epoch, rows already consumed in that epoch), saved in every checkpoint, so a resumed
    run continues exactly where it stopped. With several ranks, each takes every ``world``-th row of
    the same global order (order first, shard second), so the global data order does not depend
    on the number of devices.
    """

    def __init__(self, ordering: OrderingConfig, rows: np.ndarray, scores: np.ndarray, rank: int = 0, world: int = 1):
        self.ordering, self.rows, self.scores = ordering, np.asarray(rows), np.asarray(scores)
        self.rank, self.world = rank, world
        self.epoch, self.consumed = 0, 0

    def permutation(self, epoch: int) -> np.ndarray:
        return self.ordering.order(self.rows, self.scores, epoch)

    def __len__(self) -> int:
        return (len(self.rows) - self.rank + self.world - 1) // self.world

    def __iter__(self) -> Iterator[int]:
        perm = self.permutation(self.epoch)[self.rank :: self.world]
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
        return {"epoch": self.epoch, "consumed": self.consumed, "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

    def fingerprint(self) -> str:
        """Hash of the first epoch's order: two runs that would see data differently differ here."""
        perm = np.ascontiguousarray(self.permutation(0), dtype=np.int64)
        return hashlib.sha256(perm.tobytes() + repr(self.ordering).encode()).hexdigest()[:16]
