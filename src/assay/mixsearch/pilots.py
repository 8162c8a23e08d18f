"""The sources' pilot samples for Projektor (Kang et al., NeurIPS 2023; :mod:`assay.mixsearch.regressors.projektor`):
a few hundred embedded examples of each source and of the target set, and the entropic OT distance from a
mixture of the pilots (one weighted measure, mass p_i/n_i on each point of source i) to the target, with its
gradient in the mixture weights (the mean dual potential of each source's points), solved with assay.ot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from assay.errors import check

PILOT_SIZE = 200
"""Examples drawn per source as its pilot sample when a swarm's pilots are embedded (the paper's
pilots hold 1,000 and 1,500 points in all; a source smaller than this gives all it has)."""
REG = 0.01
"""Entropic regulariser relative to the mean ground cost (the paper's OTDD runs use ε = 1e-2)."""
TOL = 1e-4
"""Sinkhorn stops when the target-side marginal is this close in L1: the potentials are the gradient,
so they are solved tighter than a valuation's ranking needs."""
MAX_ITER = 5000


# --------------------------------------------------------------------------------------------------
# The sources' pilot samples


@dataclass
class Pilots:
    """Embedded pilot samples: one (n_i, d) array per source, and the target set (M, d)."""

    sources: dict[str, np.ndarray]
    target: np.ndarray
    origin: str = ""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, target=self.target, **{f"pilot_{d}": x for d, x in self.sources.items()})

    @classmethod
    def load(cls, path: Path | str) -> "Pilots":
        path = Path(path)
        check(path.is_file(), "--pilots", str(path), "is not a file: give an .npz with one array pilot_<source> per source and 'target'")
        with np.load(path) as z:
            check("target" in z.files, "--pilots", str(path), f"has no 'target' array (the target set's embeddings); it holds {sorted(z.files)}")
            sources = {k[len("pilot_"):]: np.asarray(z[k], dtype=np.float64) for k in z.files if k.startswith("pilot_")}
            return cls(sources, np.asarray(z["target"], dtype=np.float64), str(path))

    def check(self, domains: Sequence[str]) -> None:
        """Every source of the table has a pilot sample of finite vectors of the target's dimension."""
        where = self.origin or "pilots"
        for d in domains:
            x = self.sources.get(d)
            check(x is not None and x.ndim == 2 and len(x) > 0, "--pilots", where,
                  f"source {d!r} has no pilot sample: Projektor needs embedded examples of every source (it has {sorted(k for k, v in self.sources.items() if len(v))})")
            check(x.shape[1] == self.target.shape[1], "--pilots", where, f"source {d!r} has dimension {x.shape[1]}, the target {self.target.shape[1]}: embed both with one embedder")
            check(bool(np.isfinite(x).all()), "--pilots", where, f"source {d!r} has NaN/inf in its embeddings")
        check(self.target.ndim == 2 and len(self.target) > 0, "--pilots", where, "the target set is empty")


def embed_pilots(overrides: Sequence[str], domains: Optional[Sequence[str]] = None, size: int = PILOT_SIZE, seed: int = 0,
                 embedder: str = "minilm") -> Pilots:
    """Pilot samples of the pool the runs with ``overrides`` load: ``size`` seeded training examples per
    source and the whole validation split as the target, embedded by ``embedder`` (default MiniLM, a
    fixed text encoder; the paper embeds images with a frozen PreActResNet-18)."""
    from assay.embeddings.build import build_embedder
    from assay.mixsearch.pool import pool_splits

    splits = pool_splits(overrides)
    train = splits["train"]
    emb = build_embedder(embedder)
    source = np.asarray(train["source"])
    rng = np.random.default_rng(seed)
    out = {}
    for d in domains or sorted(set(source.tolist())):
        rows = np.flatnonzero(source == d)
        check(len(rows) > 0, "pilots", d, "source has no training examples in the pool these overrides load")
        pick = np.sort(rng.permutation(rows)[:size])
        out[d] = emb.embed(train.select(pick.tolist())).astype(np.float64)
    return Pilots(out, emb.embed(splits["val"]).astype(np.float64), "embedded pilots")


# --------------------------------------------------------------------------------------------------
# OT of a mixture of the pilots to the target, and its gradient in the mixture


class MixtureOT:
    """OT_ε(Σ_i p_i·Unif(S_i), Unif(D_val)) and ∂/∂p, one Sinkhorn solve per mixture (cached)."""

    def __init__(self, pilots: Pilots, domains: Sequence[str], reg: float = REG):
        from assay.lazy import torch
        from assay.ot import feature_cost, mean_feature_cost

        pilots.check(domains)
        xs = [pilots.sources[d] for d in domains]
        self.counts = np.array([len(x) for x in xs])
        self.owner = np.repeat(np.arange(len(xs)), self.counts)
        self.x = torch.as_tensor(np.vstack(xs), dtype=torch.float64)
        self.y = torch.as_tensor(pilots.target, dtype=torch.float64)
        self.cost = feature_cost(self.x, self.y)
        # ε is fixed once for every mixture (from the unweighted pilots), so distances are comparable
        self.eps = reg * mean_feature_cost(self.x, self.y)
        self._cache: dict[bytes, tuple[float, np.ndarray]] = {}
        self._last: Optional[tuple[np.ndarray, np.ndarray]] = None

    def __call__(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        """(OT value, ∂OT/∂p_i for every source)."""
        from assay.lazy import torch
        from assay.ot import c_transform
        from assay.ot.solvers import sinkhorn_potentials

        p = np.clip(np.asarray(p, dtype=np.float64), 0, None)
        p = p / p.sum()
        key = np.round(p, 10).tobytes()
        if key in self._cache:
            return self._cache[key]
        a = p[self.owner] / self.counts[self.owner]
        keep = a > 1e-12
        m = self.cost[torch.as_tensor(keep)]
        b = 1.0 / len(self.y)
        # start from the last solve (the proposer's steps are close): ε·log u = f + ε·log a, ε·log v = g + ε·log b
        warm = None if self._last is None else (self._last[0][keep] + self.eps * np.log(a[keep]), self._last[1] + self.eps * np.log(b))
        _, eps_log_v = sinkhorn_potentials(m, self.eps, MAX_ITER, TOL, None, torch.as_tensor(a[keep]), warmstart=warm)
        g = eps_log_v - self.eps * np.log(b)  # the a_i b_j exp((f_i + g_j − C_ij)/ε) form
        # every pilot point's potential, mass or not: the soft c-transform of g (the Sinkhorn row update)
        f = c_transform(self.x, self.y, torch.as_tensor(g), self.eps, 4096, progress=False)
        self._last = (f, g)
        value = float(a @ f + b * g.sum())
        grad = np.bincount(self.owner, weights=f) / self.counts
        self._cache[key] = (value, grad)
        return value, grad

    def values(self, X: np.ndarray) -> np.ndarray:
        return np.array([self(x)[0] for x in np.asarray(X, float)])


_PREPARED: dict[tuple, MixtureOT] = {}
"""One MixtureOT per (pilots, domains), shared by the fits of every fold and the proposer."""


def mixture_ot(pilots: Pilots, domains: Sequence[str], reg: float = REG) -> MixtureOT:
    key = (id(pilots), tuple(domains), reg)
    if key not in _PREPARED:
        _PREPARED[key] = MixtureOT(pilots, domains, reg)
    return _PREPARED[key]


_LOADED: dict[tuple, Pilots] = {}


def load_pilots(path: Path) -> Pilots:
    key = (str(path.resolve()), path.stat().st_mtime_ns) if path.is_file() else (str(path), 0)
    if key not in _LOADED:
        _LOADED[key] = Pilots.load(path)
    return _LOADED[key]
