"""The OT valuation: calibrated gradients of OT(pool, target), from a whole-pool solve or from a
subsample fit extended to the pool by the c-transform (see ``assay.ot``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from assay.lazy import torch
from assay.ot.costs import LabelCost, Labels, mean_feature_cost
from assay.ot.solvers import SolverOptions, c_transform, device, nearest_target, solve


def calibrated_gradient(f: np.ndarray) -> np.ndarray:
    """value_i = f_i − Σ_{j≠i} f_j/(N − 1); higher = more harmful / further from the target."""
    f = np.asarray(f, dtype=np.float64)
    n = len(f)
    if n == 1:
        return np.zeros(1)
    return f - (f.sum() - f) / (n - 1)


def fit_subsample(n: int, size: int, seed: int, strata: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (sorted) and weights of a seeded random subsample of about ``size`` pool points.

    Without strata: uniform, ``size`` points of weight 1/size. With strata (one integer per pool
    point): proportional allocation, each stratum gets round(size·n_c/N) points, at least one, and
    its points weigh (n_c/N)/size_c, so the subsample's mass on every stratum is the pool's exactly
    (a stratified sample; the total can exceed ``size`` by up to the number of small strata)."""
    rng = np.random.default_rng(seed)
    if strata is None:
        return np.sort(rng.choice(n, size, replace=False)), np.full(size, 1.0 / size)
    _, codes, counts = np.unique(strata, return_inverse=True, return_counts=True)
    take = np.minimum(counts, np.maximum(1, np.rint(size * counts / n).astype(np.int64)))
    order = np.lexsort((rng.random(n), codes))  # by stratum, random order within each
    rank = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    idx = np.sort(order[rank < np.repeat(take, counts)])
    return idx, (counts / n / take)[codes[idx]]


@dataclass
class OTResult:
    values: np.ndarray
    """Calibrated gradient per pool point; higher = more harmful / further from the target."""
    f: np.ndarray
    g: np.ndarray
    solver: str
    eps: Optional[float] = None
    sweeps: Optional[int] = None
    fit_size: Optional[int] = None
    """Pool points the potentials were fitted on (None = the whole pool); the rest by c-transform."""
    timings: dict[str, float] = field(default_factory=dict)
    """Wall and process-CPU seconds per phase: ``fit_*`` (the solve, with its set-up), and with a
    subsample ``stratify_*`` (nearest-target pass) and ``extend_*`` (c-transform pass)."""


class _Clock:
    """Wall and process-CPU seconds per phase (CPU time is what a shared machine's load inflates least)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.laps[f"{name}_wall_s"], self.laps[f"{name}_cpu_s"] = round(wall - self._wall, 3), round(cpu - self._cpu, 3)
        self._wall, self._cpu = wall, cpu


def ot_values(x: np.ndarray, y: np.ndarray, options: Optional[SolverOptions] = None, labels: Optional[Labels] = None, lambda_x: float = 1.0) -> OTResult:
    """OT values of pool ``x`` (N×d) against target ``y`` (M×d), optionally with class labels (LAVA's
    ground cost d = λ_x·c(x, x') + λ_y·W(a, b)). With ``options.fit_size`` < N the potentials are
    fitted on a seeded, stratified subsample of that many pool points and extended to the whole pool
    by the c-transform."""
    o = options or SolverOptions()
    clock = _Clock()  # "fit" includes the set-up (label distances, mean cost)
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"pool and target must be non-empty 2-d arrays of one dimension; got shapes {x.shape} and {y.shape}")
    n, k = len(x), len(y)
    fit = o.fit_rows(n)
    solver = o.resolve((fit or n) * k)
    dev = device()
    # float32 wherever a cost block is streamed (batched solver, or a c-transform pass over a pool
    # too large for a dense float64 matrix): the pool tensor then shares memory with the embeddings.
    streamed = solver == "batched" or (fit is not None and n * k > o.dense_max_cells)
    dtype = torch.float32 if streamed else torch.float64
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=dev)
    yt = torch.as_tensor(np.ascontiguousarray(y), dtype=dtype, device=dev)
    mean_cost = lambda_x * mean_feature_cost(xt, yt)
    classes = b = extra = None
    if labels is not None:
        classes = LabelCost(x, y, labels, o.seed, dtype, dev)
        b, extra = classes.b, classes.rows()
        mean_cost += classes.mean
    eps = o.reg * max(mean_cost, 1e-12)
    start = max(mean_cost, eps) if o.eps_scaling else None

    if fit is None:
        p = solve(xt, yt, solver, eps, o, b=b, extra_cost=extra, lambda_x=lambda_x, eps_start=start)
        clock.lap("fit")
        return OTResult(calibrated_gradient(p.f), p.f, p.g, solver, p.eps, p.sweeps, timings=clock.laps)

    # strata: nearest target point (and class), see the package docstring
    cell = nearest_target(xt, yt, o.batch_size, extra, lambda_x, o.progress)
    strata = cell if classes is None else classes.codes * k + cell
    clock.lap("stratify")
    idx, a_np = fit_subsample(n, fit, o.seed, strata)
    fit_dtype = torch.float32 if solver == "batched" else torch.float64
    xs = torch.as_tensor(np.ascontiguousarray(x[idx]), dtype=fit_dtype, device=dev)
    a = torch.as_tensor(a_np, dtype=fit_dtype, device=dev)
    p = solve(
        xs, yt.to(fit_dtype), solver, eps, o, a=a, b=None if b is None else b.to(fit_dtype),
        extra_cost=None if classes is None else classes.rows(idx), lambda_x=lambda_x, eps_start=start,
    )
    clock.lap("fit")
    g = torch.as_tensor(p.g, dtype=dtype, device=dev)
    f = c_transform(xt, yt, g, p.eps, o.batch_size, b, extra, lambda_x, o.progress)
    clock.lap("extend")
    return OTResult(calibrated_gradient(f), f, p.g, solver, p.eps, p.sweeps, len(idx), clock.laps)
