"""TSDS's optimal transport toward a target set in closed form over nearest-neighbour lists (Liu,
Karbasi & Rekatsinas, "TSDS: Data Selection for Task-Specific Model Finetuning", NeurIPS 2024, arXiv
2410.11303; the KNN-KDE algorithm as DataFlex ships it, OpenDCAI/DataFlex
``src/dataflex/offline_selector/offline_tsds_selector.py``, read for this module).

TSDS chooses a sampling distribution p over the pool that minimises α·(OT cost of moving the target's
uniform mass 1/M per query onto p) + (1 − α)·(a diversity regulariser that caps the mass any candidate may
take, relative to its kernel density estimate, so near-duplicates share what one of them would get). Its
optimum moves each query's mass onto the query's nearest candidates in order, each candidate x taking at
most 1/(s·kde(x)) of it, where the level s is found by a greedy sweep over the queries' neighbour lists
(a heap on each query's running Σ 1/kde): the sweep raises s until the transport cost term
(α/C)·Σ_j cost_j reaches (1 − α)·M. The last candidate reached by each query takes the rest of its 1/M.

Pure numerics on arrays (no configuration): the scorer ``assay.selection.scorers.tsds`` embeds pool and
target and passes the unit-normalised vectors in.
"""

from __future__ import annotations

import heapq

import numpy as np

CELLS = 1 << 24
"""Distances held at once (rows of queries × pool points, float64: 128 MiB)."""


def nearest(points: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest ``points`` of every query by Euclidean distance: (distances [M, k], indices [M, k]),
    nearest first, ties by point order. Exact (DataFlex: FAISS IVFFlat, approximate); queries in chunks of
    at most ``CELLS`` distances, the k smallest of each row by partition before sorting them."""
    x, q = np.asarray(points, dtype=np.float64), np.asarray(queries, dtype=np.float64)
    n = len(x)
    k = min(k, n)
    x_sq = (x * x).sum(1)
    rows = max(1, min(len(q), CELLS // max(n, 1)))
    dists, idx = [], []
    for start in range(0, len(q), rows):
        block = q[start:start + rows]
        d2 = np.maximum((block * block).sum(1)[:, None] + x_sq[None, :] - 2.0 * block @ x.T, 0.0)
        if k < n:
            candidates = np.argpartition(d2, k - 1, axis=1)[:, :k]
            values = np.take_along_axis(d2, candidates, axis=1)
            order = np.take_along_axis(candidates, np.lexsort((candidates, values), axis=-1), axis=1)
        else:
            order = np.argsort(d2, axis=1, kind="stable")
        dists.append(np.sqrt(np.take_along_axis(d2, order, axis=1)))
        idx.append(order)
    return np.concatenate(dists), np.concatenate(idx)


def kernel_density(points: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """TSDS's density estimate of each point among ``points``: Σ over its k nearest (itself included)
    of the Epanechnikov-like kernel max(0, 1 − d²/σ²); 1 for every point when σ = 0 (no KDE)."""
    if sigma == 0:
        return np.ones(len(points))
    d, _ = nearest(points, points, k)
    return np.maximum(0.0, 1.0 - d**2 / sigma**2).sum(1)


def tsds_probabilities(pool: np.ndarray, target: np.ndarray, neighbours: int = 5000, kde_neighbours: int = 1000,
                       sigma: float = 0.75, alpha: float = 0.6, c: float = 5.0) -> np.ndarray:
    """TSDS's sampling probability of every pool point (sums to 1), by the greedy level sweep above.

    ``neighbours``: candidates listed per query (max_K); ``kde_neighbours``: neighbours in the density
    estimate, which runs over the candidates some list reaches (kde_K); ``sigma``: kernel bandwidth;
    ``alpha``: weight of the transport term against the diversity term; ``c``: the scale C of the
    transport cost in the stopping rule (α/C)·Σ cost ≥ (1 − α)·M."""
    m, n = len(target), len(pool)
    if min(n, neighbours) < 2:
        raise ValueError(f"TSDS needs at least 2 pool points and 2 neighbours per query, got {n} and {neighbours}")
    dist, idx = nearest(pool, target, min(neighbours, n))
    k_max = dist.shape[1]
    reached = np.unique(idx)
    kde_of = np.zeros(n)
    kde_of[reached] = kernel_density(np.asarray(pool, dtype=np.float64)[reached], min(kde_neighbours, len(reached)), sigma)
    kde = kde_of[idx]  # [M, K]

    last = [0] * m
    heap = [(1.0 / kde[j, 0], 0, j) for j in range(m)]
    heapq.heapify(heap)
    cost = np.zeros(m)
    weighted = [dist[j, 0] / kde[j, 0] for j in range(m)]
    total, level = 0.0, 0.0
    while heap:
        count, k, j = heapq.heappop(heap)
        level = count
        # query j's transport cost at this level: moving its mass out to its (k+1)-th neighbour
        total -= cost[j]
        cost[j] = dist[j, k + 1] * count - weighted[j]
        total += cost[j]
        if alpha / c * total >= (1.0 - alpha) * m:
            break
        last[j] = k
        if k < k_max - 2:
            heapq.heappush(heap, (count + 1.0 / kde[j, k + 1], k + 1, j))
            weighted[j] += dist[j, k + 1] / kde[j, k + 1]

    probs = np.zeros(n)
    for j in range(m):
        shares = (1.0 / m) / level / kde[j, : last[j] + 1]
        np.add.at(probs, idx[j, : last[j] + 1], shares)
        probs[idx[j, last[j] + 1]] += max(1.0 / m - shares.sum(), 0.0)
    probs = np.maximum(probs, 0.0)
    return probs / probs.sum()
