"""The numerics of CoLM's mini-batch coresets (Nguyen et al., ICLR 2025, arXiv 2407.19580), pure
functions over tensors: which sources are kept whole and each other source's budget, the
zeroth-order per-example gradient of a few parameters, its Adam normalisation, the per-source top-d
sparsification and facility location by lazy greedy.

CoLM trains on a coreset S (|S| = b) of a larger batch B (|B| = r·b) whose gradient matches B's,
min_S ‖Σ_{i∈B} g_i − Σ_{j∈S} g_j‖, through the facility-location surrogate
F(S) = Σ_{i∈B} max_{j∈S} sim(i, j) maximised greedily (CRAIG, Mirzasoleiman et al. 2020).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from typing import Callable, Optional, Sequence

import torch


def source_budgets(sources: Sequence[str], size: int, small_share: float) -> tuple[list[str], dict[str, int]]:
    """The sources kept whole and the coreset budget of every other source, for a coreset of
    ``size`` out of a batch whose examples come from ``sources``.

    CoLM's first fix for imbalanced mixtures: a source whose share of the batch is below
    ``small_share`` is kept whole (the smallest first, while it fits in ``size``); the rest of the
    budget goes to the other sources in proportion to their share of the batch, rounded as the
    authors' ``source_wise_selection='proportional'``: the floor of each share, then one more
    example to each source in ascending order of its floor (ties by name) until the budget is met,
    never more than a source has."""
    counts = Counter(sources)
    n = len(sources)
    kept: list[str] = []
    room = min(size, n)
    for source in sorted((s for s in counts if counts[s] / n < small_share), key=lambda s: (counts[s], s)):
        if counts[source] <= room:
            kept.append(source)
            room -= counts[source]
    rest = sorted(s for s in counts if s not in kept)
    total = sum(counts[s] for s in rest)
    budgets = {s: math.floor(room * counts[s] / total) for s in rest} if total else {}
    left = room - sum(budgets.values())
    while left > 0:
        for s in sorted(rest, key=lambda s: (budgets[s], s)):
            if left > 0 and budgets[s] < counts[s]:
                budgets[s] += 1
                left -= 1
    return kept, budgets


@torch.no_grad()
def zo_gradients(params: Sequence[torch.Tensor], per_sample_loss: Callable[[], torch.Tensor], eps: float,
                 generator: torch.Generator, directions: int = 1) -> torch.Tensor:
    """[n, D] zeroth-order estimates of each example's gradient with respect to ``params``
    (flattened and concatenated, D = their total size): MeZO's central difference along a Gaussian
    direction z, c_i = [L_i(θ + εz) − L_i(θ − εz)] / (2ε) and ĝ_i = c_i·z, averaged over
    ``directions`` independent directions (E[zzᵀ] = I makes each an unbiased estimate of g_i as ε → 0).
    ``per_sample_loss()`` returns the [n] losses at the current value of ``params``; the parameters
    are restored exactly (from a copy) afterwards. z is drawn on the CPU from ``generator``, so every
    device and every process draws the same z from the same seed."""
    saved = [p.detach().clone() for p in params]
    total: Optional[torch.Tensor] = None
    try:
        for _ in range(directions):
            zs = [torch.randn(p.shape, generator=generator, dtype=torch.float32) for p in params]
            for p, s, z in zip(params, saved, zs):
                p.copy_(s + eps * z.to(device=p.device, dtype=p.dtype))
            plus = per_sample_loss()
            for p, s, z in zip(params, saved, zs):
                p.copy_(s - eps * z.to(device=p.device, dtype=p.dtype))
            minus = per_sample_loss()
            c = ((plus - minus) / (2 * eps)).float()  # the difference in the losses' own precision
            flat = torch.cat([z.flatten() for z in zs]).to(c.device)
            g = c[:, None] * flat[None, :]
            total = g if total is None else total + g
    finally:
        for p, s in zip(params, saved):
            p.copy_(s)
    assert total is not None
    return total / directions


def adam_normalise(g: torch.Tensor, m: Optional[torch.Tensor], v: Optional[torch.Tensor], step: int,
                   betas: tuple[float, float], eps: float) -> torch.Tensor:
    """[n, D] the Adam update each example's gradient would make (CoLM's second fix): with the
    optimizer's moments m_{t−1}, v_{t−1} (zeros before the first step) and t = ``step`` + 1,
    m_i = β₁m_{t−1} + (1−β₁)g_i, v_i = β₂v_{t−1} + (1−β₂)g_i², u_i = m̂_i / (√v̂_i + ε) with
    m̂_i = m_i/(1−β₁ᵗ), v̂_i = v_i/(1−β₂ᵗ)."""
    b1, b2 = betas
    m = torch.zeros_like(g[0]) if m is None else m.to(g)
    v = torch.zeros_like(g[0]) if v is None else v.to(g)
    t = step + 1
    m_i = b1 * m + (1 - b1) * g
    v_i = b2 * v + (1 - b2) * g.square()
    return (m_i / (1 - b1**t)) / ((v_i / (1 - b2**t)).sqrt() + eps)


def top_coordinates(reps: torch.Tensor, groups: Sequence[str], dim: int) -> torch.Tensor:
    """[n, min(dim, D)] each example's ``dim`` coordinates with the largest |mean| over its group
    (CoLM's third fix; the authors' ``mezo_topk='largest'``, per source): the coordinates where
    the group's gradient is large, chosen per group because facility location runs per group."""
    k = min(dim, reps.shape[1])
    out = reps.new_zeros(reps.shape[0], k)
    labels = list(groups)
    for group in sorted(set(labels)):
        rows = torch.tensor([i for i, s in enumerate(labels) if s == group], dtype=torch.long, device=reps.device)
        order = torch.sort(reps[rows].mean(0).abs(), descending=True, stable=True).indices[:k]
        out[rows] = reps[rows][:, order]
    return out


def cosine_similarity(x: torch.Tensor) -> torch.Tensor:
    """[n, n] cosine similarities of the rows of ``x``; a zero row is 0 to every row (the authors
    drop such examples; here it stays a candidate that covers nothing)."""
    norms = x.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, x / norms.clamp_min(1e-30), torch.zeros_like(x))
    return unit @ unit.T


def facility_location(sim: torch.Tensor, k: int) -> list[int]:
    """The greedy maximiser of F(S) = Σ_i max(0, max_{j∈S} sim[i, j]) with |S| = k, in the order
    chosen: lazy greedy (Minoux 1978), which picks exactly what plain greedy picks (the largest
    marginal gain, ties to the lowest index) while re-evaluating few gains. The nearest-selected
    similarity of every i starts at 0, as in submodlib's FacilityLocation, which the authors call."""
    s = sim.double().cpu()
    n = s.shape[0]
    k = min(k, n)
    nearest = torch.zeros(n, dtype=torch.float64)

    def gain(j: int) -> float:
        return float((s[:, j] - nearest).clamp_min(0).sum())

    heap = [(-gain(j), j, 0) for j in range(n)]
    heapq.heapify(heap)
    chosen: list[int] = []
    while len(chosen) < k:
        _, j, fresh = heapq.heappop(heap)
        if fresh == len(chosen):  # its gain is current and no other can exceed it (submodularity)
            chosen.append(j)
            nearest = torch.maximum(nearest, s[:, j])
        else:
            heapq.heappush(heap, (-gain(j), j, len(chosen)))
    return chosen


def coreset_positions(sources: Sequence[str], size: int, small_share: float, dim: int,
                      representations: Callable[[list[int]], torch.Tensor]) -> list[int]:
    """Positions (ascending) of the coreset of ``size`` out of a batch from ``sources``: the small
    sources whole, then per other source its budget by facility location on the cosine similarity
    of the top-``dim`` coordinates of ``representations(candidates)`` ([len(candidates), D], the
    normalised gradients of the candidate positions). A batch no larger than ``size`` is kept whole."""
    n = len(sources)
    if n <= size:
        return list(range(n))
    kept_sources, budgets = source_budgets(sources, size, small_share)
    kept = [i for i, s in enumerate(sources) if s in kept_sources]
    candidates = [i for i, s in enumerate(sources) if s not in kept_sources]
    chosen: list[int] = []
    if any(0 < budgets[s] < sum(1 for x in sources if x == s) for s in budgets):
        reps = top_coordinates(representations(candidates), [sources[i] for i in candidates], dim)
    for source, budget in sorted(budgets.items()):
        members = [c for c, i in enumerate(candidates) if sources[i] == source]
        if budget >= len(members):
            picked = members
        elif budget == 0:
            picked = []
        else:
            picked = [members[j] for j in facility_location(cosine_similarity(reps[members]), budget)]
        chosen += [candidates[c] for c in picked]
    return sorted(kept + chosen)
