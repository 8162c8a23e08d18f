"""``DomainSampler``: every batch position draws a domain by the current weights, then the next row
of that domain's own order.

Weights can change during training: a schedule (a function of the batch index) or an online mixer
(``set_weights``, from a callback). Every change is recorded with the first batch it applies to, so
the whole draw is a pure function of (seed, weight history): a resumed run replays the history and
continues bit-identically, whatever the loader prefetched before the checkpoint (DoReMi's loader
does the same, ``simulate_data_skip_per_domain``).

Inside a domain, rows come in the ordering's permutation of that domain's kept rows, pass after pass
(pass e of domain d = ``ordering.order(rows_d, scores, e)``), so curricula still apply within a domain.
A per-domain cap (epochs over the domain's rows) removes a domain from the draw once it is reached.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterator, Optional

import numpy as np
from torch.utils.data import Sampler


class DomainSampler(Sampler[int]):
    def __init__(
        self,
        ordering,
        rows: np.ndarray,
        scores: np.ndarray,
        row_domains: np.ndarray,
        domains: list[str],
        base_weights: Callable[[int], np.ndarray],
        batch_size: int,
        seed: int,
        caps: Optional[np.ndarray] = None,
        to_examples: Optional[np.ndarray] = None,
        rank: int = 0,
        world: int = 1,
    ):
        """``rows``: kept training rows; ``row_domains[r]``: domain index of training row r;
        ``base_weights(b)``: the weights of batch b before any online change (a schedule, or
        constant); ``caps[d]``: most draws from domain d over the run (None = no cap);
        ``to_examples[d]``: factor turning a domain weight into an example-draw weight (1/mean
        tokens per example for token mixtures, ones for example mixtures)."""
        self.ordering, self.rows, self.scores = ordering, np.asarray(rows), np.asarray(scores)
        self.domains, self.seed, self.rank, self.world = list(domains), int(seed), rank, world
        domain_of = np.asarray(row_domains)[self.rows]
        self.pools = [self.rows[domain_of == d] for d in range(len(domains))]
        self.base_weights = base_weights
        self.block = batch_size * world
        self.epoch_rows = -(-len(self.rows) // self.block) * self.block  # whole batches per epoch
        self.caps = None if caps is None else np.asarray(caps, dtype=np.int64)
        self.to_examples = np.ones(len(domains)) if to_examples is None else np.asarray(to_examples, dtype=np.float64)
        self.epoch, self.consumed = 0, 0
        self.changes: list[tuple[int, list[float]]] = []
        """(first batch it applies to, weights): every online change, in order."""
        self._drawn: list[np.ndarray] = []  # domain index per position, per drawn block
        self._counts: list[np.ndarray] = [np.zeros(len(domains), dtype=np.int64)]  # draws per domain before block b
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        self._next_block = 0  # the first batch the loader has not started on
        self._fingerprint: Optional[str] = None
        self._fingerprint = self.fingerprint()

    # ---- weights --------------------------------------------------------------------------------
    def weights_of(self, block: int) -> np.ndarray:
        """The domain weights in effect for batch ``block`` (before caps)."""
        w = None
        for first, weights in self.changes:
            if first <= block:
                w = np.asarray(weights, dtype=np.float64)
        return self.base_weights(block) if w is None else w

    def set_weights(self, weights: np.ndarray, first: Optional[int] = None) -> int:
        """New weights from batch ``first`` (default: the next batch not yet drawn on; under several
        processes the ranks agree on it); returns that batch's index."""
        first = self._next_block if first is None else max(int(first), self._next_block)
        self.changes = [c for c in self.changes if c[0] < first] + [(first, [float(x) for x in weights])]
        del self._drawn[first:], self._counts[first + 1 :]  # anything drawn ahead is drawn again
        return first

    def draw_probabilities(self, block: int, counts: np.ndarray) -> np.ndarray:
        w = self.weights_of(block) * self.to_examples
        w = np.where([len(p) > 0 for p in self.pools], w, 0.0)
        if self.caps is not None:
            w = np.where(counts < self.caps, w, 0.0)
        if w.sum() <= 0:  # every domain is at its cap: the run asked for more than the caps allow
            w = np.array([float(len(p) > 0) for p in self.pools])
        return w / w.sum()

    # ---- the draw -------------------------------------------------------------------------------
    def _draw_until(self, block: int) -> None:
        while len(self._drawn) <= block:
            b = len(self._drawn)
            p = self.draw_probabilities(b, self._counts[b])
            picked = np.random.default_rng([self.seed, 7_368_787, b]).choice(len(self.domains), size=self.block, p=p)
            self._drawn.append(picked)
            self._counts.append(self._counts[b] + np.bincount(picked, minlength=len(self.domains)))

    def _row(self, domain: int, j: int) -> int:
        pool = self.pools[domain]
        passes, pos = divmod(int(j), len(pool))
        key = (domain, passes)
        if key not in self._perms:
            self._perms[key] = np.asarray(self.ordering.order(pool, self.scores, passes))
        return int(self._perms[key][pos])

    def block_rows(self, block: int) -> np.ndarray:
        """The rows of global batch ``block`` (all ranks), drawing up to it if needed."""
        self._draw_until(block)
        domains = self._drawn[block]
        seen = self._counts[block].copy()
        out = np.empty(len(domains), dtype=np.int64)
        for i, d in enumerate(domains):
            out[i] = self._row(int(d), seen[d])
            seen[d] += 1
        return out

    def counts_before(self, block: int) -> dict[str, int]:
        self._draw_until(block)
        return dict(zip(self.domains, self._counts[block].tolist()))

    def __len__(self) -> int:
        return self.epoch_rows // self.world

    def __iter__(self) -> Iterator[int]:
        per_block = self.block // self.world
        blocks_per_epoch = self.epoch_rows // self.block
        start = self.consumed  # rows of this rank already consumed in this epoch
        first_block, offset = divmod(start, per_block)
        for b in range(first_block, blocks_per_epoch):
            global_block = self.epoch * blocks_per_epoch + b
            rows = self.block_rows(global_block)[self.rank :: self.world]
            self._next_block = max(self._next_block, global_block + 1)
            for row in rows[offset if b == first_block else 0 :]:
                yield int(row)

    # ---- resume (the interface of OrderedSampler) ------------------------------------------------
    def advance(self, n_rows: int) -> None:
        self.consumed += n_rows

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def reselect(self, rows: np.ndarray, scores: np.ndarray, epoch: int) -> None:
        raise RuntimeError("re-selection during training does not combine with a domain-drawing mixture (refused when the config is validated)")

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "fingerprint": self.fingerprint(), "weight_changes": [list(c) for c in self.changes]}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        self.changes = [(int(first), [float(x) for x in w]) for first, w in state.get("weight_changes", [])]
        self._drawn, self._counts = [], [np.zeros(len(self.domains), dtype=np.int64)]
        blocks_per_epoch = self.epoch_rows // self.block
        self._next_block = self.epoch * blocks_per_epoch + self.consumed // (self.block // self.world)

    def fingerprint(self) -> str:
        """Hash of the first batch's rows, the pools and the initial weights."""
        if self._fingerprint is not None:
            return self._fingerprint
        h = hashlib.sha256()
        h.update(repr((self.domains, [len(p) for p in self.pools], self.seed, self.block, repr(self.ordering))).encode())
        h.update(np.round(self.base_weights(0), 12).tobytes())
        h.update(self.block_rows(0).tobytes())
        self._drawn, self._counts = [], [np.zeros(len(self.domains), dtype=np.int64)]
        return h.hexdigest()[:16]
