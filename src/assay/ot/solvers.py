"""Dual solvers of OT(pool, target) and the streamed row passes (c-transform, nearest target).

``SolverOptions`` holds every numerical choice; ``solve`` is the one place a solver is chosen. Each
solver returns the pool-side potential f (up to an additive constant, which the calibrated gradient
ignores) and the target-side potential g in the form P_ij = a_i b_j exp((f_i + g_j − C_ij)/ε) (for
``exact``: the LP duals), the form the c-transform extends to points the solve did not see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from assay.lazy import torch
from assay.ot.costs import feature_cost, half_sq_norms
from assay.run.progress import Progress

SOLVERS = ("auto", "exact", "sinkhorn", "batched")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class SolverOptions:
    """How OT(pool, target) is solved; the fields of the scorers' config of the same names."""

    solver: str = "auto"
    """``exact``, ``sinkhorn`` (full cost matrix), ``batched`` (cost blocks), or ``auto`` (sinkhorn
    up to ``dense_max_cells`` = N·M, batched beyond)."""
    reg: float = 0.01
    """Entropic regulariser relative to the mean ground cost: ε = reg · mean C."""
    max_iter: int = 1000
    """Sinkhorn iterations (sweeps, for batched) at most."""
    tol: float = 1e-2
    """Stop when the L1 error of the target-side marginal is below this."""
    batch_size: int = 2048
    """Pool rows per cost block (batched solver and every streamed pass)."""
    dense_max_cells: int = 25_000_000
    """Largest N·M solved with the full cost matrix (25M float64 cells = 200 MB each)."""
    cache_gib: float = 2.0
    """Batched solver: cost blocks kept between sweeps up to this many GiB (0 = recompute)."""
    eps_scaling: Optional[float] = 0.5
    """Batched solver: anneal ε from the mean cost down by this factor per sweep (None = start at ε)."""
    fit_size: Optional[int] = None
    """Fit the potentials on a stratified subsample of about this many pool points and extend them to
    the pool by the c-transform (None/0, or at least the pool size = solve the whole pool)."""
    seed: int = 0
    """Seed of the subsample and of the per-class samples of the label cost."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {list(SOLVERS)}, not {self.solver!r}")
        fit = self.fit_size
        if not (fit is None or (isinstance(fit, (int, np.integer)) and not isinstance(fit, bool) and fit >= 0)):
            raise ValueError(f"fit_size must be a non-negative integer or None, not {fit!r}")

    def fit_rows(self, n: int) -> Optional[int]:
        """Pool points the potentials are fitted on for a pool of ``n`` (None = the whole pool)."""
        return int(self.fit_size) if self.fit_size and self.fit_size < n else None

    def resolve(self, cells: int) -> str:
        """The concrete solver for a solve with ``cells`` = rows × targets cost cells."""
        if self.solver != "auto":
            return self.solver
        return "sinkhorn" if cells <= self.dense_max_cells else "batched"


class Potentials(NamedTuple):
    f: np.ndarray
    g: np.ndarray
    eps: Optional[float]
    """The ε of the entropic problem solved (None for exact LP duals)."""
    sweeps: Optional[int] = None


def solve(
    x: torch.Tensor,
    y: torch.Tensor,
    solver: str,
    eps: float,
    options: SolverOptions,
    a: Optional[torch.Tensor] = None,
    b: Optional[torch.Tensor] = None,
    extra_cost: Optional[Callable[[slice], torch.Tensor]] = None,
    lambda_x: float = 1.0,
    eps_start: Optional[float] = None,
) -> Potentials:
    """Potentials of OT between rows ``x`` (weights ``a``, uniform if None) and ``y`` (weights ``b``)
    under C = λ_x·c(x, y) + extra_cost, with the concrete ``solver`` (exact, sinkhorn, batched)."""
    if solver == "batched":
        if lambda_x != 1:
            x, y = x * math.sqrt(lambda_x), y * math.sqrt(lambda_x)
        f, g, sweeps = batched_potentials(
            x, y, eps, options.max_iter, options.tol, options.batch_size, extra_cost, options.progress, b, options.cache_gib,
            eps_start, options.eps_scaling or 0.5, a,
        )
        return Potentials(f, g, eps, sweeps)
    m = lambda_x * feature_cost(x, y)
    if extra_cost is not None:
        m += extra_cost(slice(None)).to(m.dtype)
    if solver == "exact":
        return Potentials(*exact_potentials(m, b, a), None)
    if solver != "sinkhorn":
        raise ValueError(f"solver must be one of {list(SOLVERS[1:])}, not {solver!r}")
    f, g = sinkhorn_potentials(m, eps, options.max_iter, options.tol, b, a)
    # POT's scalings: ε·log v = g + ε·log b in the a_i b_j exp((f_i + g_j − C_ij)/ε) form
    g = g - eps * np.log(_np(b) if b is not None else np.full(len(g), 1.0 / len(g)))
    return Potentials(f, g, eps)


def _weights(n: int, b: Optional[torch.Tensor], m: torch.Tensor, a: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.full((n,), 1.0 / n, dtype=m.dtype, device=m.device) if a is None else a.to(m.dtype)
    if b is None:
        b = torch.full((m.shape[1],), 1.0 / m.shape[1], dtype=m.dtype, device=m.device)
    return a, b.to(m.dtype)


def exact_potentials(m: torch.Tensor, b: Optional[torch.Tensor] = None, a: Optional[torch.Tensor] = None) -> tuple[np.ndarray, np.ndarray]:
    """LP duals (u, v) of the exact problem (``ot.emd``, network simplex); uniform pool weights unless ``a``."""
    import ot

    n, k = m.shape
    a, b = _weights(n, b, m.double(), a)
    _, log = ot.emd(a, b, m.double(), numItermax=max(1_000_000, 50 * n * k), log=True)
    if log.get("warning"):
        raise RuntimeError(f"network simplex did not converge ({log['warning']}); use the sinkhorn solver")
    return _np(log["u"]), _np(log["v"])


def sinkhorn_potentials(
    m: torch.Tensor, eps: float, max_iter: int, tol: float, b: Optional[torch.Tensor] = None, a: Optional[torch.Tensor] = None,
    warmstart: Optional[tuple[np.ndarray, np.ndarray]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Entropic duals f = ε·log u, g = ε·log v from POT's log-domain Sinkhorn on the full cost matrix;
    ``warmstart``: (f, g) in that form to start from (a nearby problem's solution: fewer iterations)."""
    import ot

    n, k = m.shape
    a, b = _weights(n, b, m, a)
    warm = None if warmstart is None else tuple(torch.as_tensor(np.asarray(w) / eps, dtype=m.dtype, device=m.device) for w in warmstart)
    _, log = ot.sinkhorn(a, b, m, eps, method="sinkhorn_log", numItermax=max_iter, stopThr=tol, log=True, warmstart=warm)
    return _np(eps * log["log_u"]), _np(eps * log["log_v"])


def batched_potentials(
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    max_iter: int,
    tol: float,
    batch_size: int,
    extra_cost: Optional[Any] = None,
    progress: bool = True,
    b: Optional[torch.Tensor] = None,
    cache_gib: float = 0.0,
    eps_start: Optional[float] = None,
    eps_decay: float = 0.5,
    a: Optional[torch.Tensor] = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Log-domain Sinkhorn with the cost computed in row blocks of ``batch_size`` (memory O(batch·M)).

    One sweep over the blocks does both half-steps: f_B = −ε·LSE_j((g_j − C_Bj)/ε + log b_j) for the
    block (exact row marginals), then accumulates LSE_i((f_i − C_ij)/ε + log a_i) over blocks for the
    g update. With P_ij = a_i b_j exp((f_i + g_j − C_ij)/ε), the column sums before the g update are
    b_j·exp((g_j − g_new_j)/ε), so their L1 error against b is known at no extra cost and is the stop rule.

    C_ij = ‖x_i‖²/2 + ‖y_j‖²/2 − x_i·y_j, and the squared norms come out of the log-sum-exps, so a
    block costs one matmul x_B·yᵀ/ε plus one exponential per cell: with z_ij = (x_i·y_j + g_j −
    ‖y_j‖²/2)/ε + log b_j, row max m_i and E_ij = exp(z_ij − m_i), the row update is
    f_i = ‖x_i‖²/2 − ε(m_i + log Σ_j E_ij), and the plan's column sums are a matrix-vector product,
    Σ_i P_ij ∝ Σ_i E_ij·a_i/Σ_j' E_ij', in the linear domain (each E ≤ 1, so nothing overflows).
    A column whose every entry underflows has received no representable mass; only then is that
    sweep's column step redone with log-sum-exps over the pool. Blocks of x·yᵀ are kept between
    sweeps while they fit in ``cache_gib`` (0 = recompute every sweep; memory O(batch·M) either way).
    ε-scaling (Kosowsky & Yuille 1994; Schmitzer 2019, arXiv 1610.06519): with ``eps_start`` the first
    sweeps run at ε_t = max(ε, eps_start·eps_decay^t), each warm-starting the next; at a small final ε
    this needs far fewer sweeps than starting cold, and the stop rule is only checked once ε_t = ε.
    ``extra_cost(rows)`` adds a block of cost (LAVA's label term); ``a`` are pool weights (uniform if
    None; a stratified subsample passes its own). Returns f, g and the number of sweeps."""
    n, k = x.shape[0], y.shape[0]
    dt, dev = x.dtype, x.device
    aw = torch.full((n,), 1.0 / n, dtype=dt, device=dev) if a is None else a.to(dt)
    bw = torch.full((k,), 1.0 / k, dtype=dt, device=dev) if b is None else b.to(dt)
    log_b = torch.log(bw)
    hx, hy = half_sq_norms(x), half_sq_norms(y)
    g = torch.zeros(k, dtype=dt, device=dev)
    f = torch.empty(n, dtype=dt, device=dev)
    cache: dict[int, torch.Tensor] = {}
    room = int(cache_gib * 2**30)
    work = torch.empty((min(batch_size, n), k), dtype=dt, device=dev)  # one buffer: no allocation per block

    def scores(start: int, rows: slice, e: float, r: torch.Tensor) -> torch.Tensor:
        """z_Bj = (x_i·y_j − extra_ij)/ε + r_j for the block, written into the work buffer."""
        nonlocal room
        z = work[: rows.stop - rows.start]
        if start not in cache and (rows.stop - rows.start) * k * x.element_size() <= room:
            s_ = x[rows] @ y.T
            if extra_cost is not None:
                s_ -= extra_cost(rows)
            cache[start] = s_
            room -= s_.numel() * s_.element_size()
        if start in cache:
            return torch.add(r, cache[start], alpha=1.0 / e, out=z)
        torch.addmm(r, x[rows], y.T, alpha=1.0 / e, out=z)
        if extra_cost is not None:
            z.sub_(extra_cost(rows), alpha=1.0 / e)
        return z

    def log_columns(e: float, r: torch.Tensor) -> torch.Tensor:
        """log Σ_i a_i exp((x_i·y_j − extra_ij + f_i − ‖x_i‖²/2)/ε), with log-sum-exps (the fallback)."""
        col = torch.full((k,), -math.inf, dtype=dt, device=dev)
        for start in range(0, n, batch_size):
            rows = slice(start, min(n, start + batch_size))
            z = scores(start, rows, e, r).sub_(r)
            z.add_(((f[rows] - hx[rows]) / e + torch.log(aw[rows]))[:, None])
            col = torch.logaddexp(col, torch.logsumexp(z, dim=0))
        return col

    bar = Progress("sinkhorn (batched)", max_iter, unit="sweep", disable=not progress)  # max_iter bounds it; it may converge sooner
    sweeps = 0
    for sweeps in range(max_iter):
        e = max(eps, eps_start * eps_decay**sweeps) if eps_start is not None else eps
        r = (g - hy) / e + log_b
        mass = torch.zeros(k, dtype=torch.float64, device=dev)  # Σ_i a_i·n·E_ij/S_i
        for start in range(0, n, batch_size):
            rows = slice(start, min(n, start + batch_size))
            z = scores(start, rows, e, r)
            top = z.amax(dim=1)
            z.sub_(top[:, None]).exp_()
            total = z.sum(dim=1)
            f[rows] = hx[rows] - e * (top + total.log())
            mass += (z.T @ (aw[rows] * n / total)).double()
        if bool((mass > 0).all()):
            col = (mass.log() - math.log(n)).to(dt) - r
        else:
            col = log_columns(e, r)
        g_new = hy - e * col
        err = float((bw * (torch.exp((g - g_new) / e) - 1)).abs().sum())
        g = g_new
        bar.update(1, eps=f"{e:.3g}", marginal_err=f"{err:.2e}")
        if e == eps and err < tol:
            break
    bar.close()
    return _np(f), _np(g), sweeps + 1


def c_transform(
    x: torch.Tensor,
    y: torch.Tensor,
    g: torch.Tensor,
    eps: Optional[float],
    batch_size: int,
    b: Optional[torch.Tensor] = None,
    extra_cost: Optional[Any] = None,
    lambda_x: float = 1.0,
    progress: bool = True,
) -> np.ndarray:
    """Pool-side potential from the target-side one, in one streamed pass over the pool.

    Soft (ε > 0): f_i = −ε log Σ_j b_j exp((g_j − C_ij)/ε), the Sinkhorn row update, so the fixed point
    of Sinkhorn is reproduced on the points the solve saw and extended to every other point.
    Hard (ε = None, the ε → 0 limit for LP duals): f_i = min_j (C_ij − g_j).
    With C_ij = λ(‖x_i‖²/2 + ‖y_j‖²/2 − x_i·y_j) + extra_ij, a block is one matmul of the pool rows with
    λ·y/ε plus a log-sum-exp over the M targets: O(N·M·d) time, O(batch·M) memory, and the pool
    tensor is never copied."""
    return _row_pass(x, y, g, eps, batch_size, b, extra_cost, lambda_x, progress, "OT c-transform")[0]


def nearest_target(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, extra_cost: Optional[Any] = None, lambda_x: float = 1.0, progress: bool = True
) -> np.ndarray:
    """argmin_j C_ij for every pool row: the target point whose cell (under the ground cost) holds x_i."""
    zero = torch.zeros(y.shape[0], dtype=x.dtype, device=x.device)
    return _row_pass(x, y, zero, None, batch_size, None, extra_cost, lambda_x, progress, "OT strata", argmin=True)[1]


def _row_pass(
    x: torch.Tensor,
    y: torch.Tensor,
    g: torch.Tensor,
    eps: Optional[float],
    batch_size: int,
    b: Optional[torch.Tensor],
    extra_cost: Optional[Any],
    lambda_x: float,
    progress: bool,
    desc: str,
    argmin: bool = False,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    n = x.shape[0]
    e = 1.0 if eps is None else eps
    bw = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=x.dtype, device=x.device) if b is None else b.to(x.dtype)
    yt = (y.to(x.dtype) * (lambda_x / e)).T.contiguous()
    hx = half_sq_norms(x, lambda_x)
    # the column term (g_j − λ‖y_j‖²/2)/ε + log b_j, added by the matmul itself (addmm)
    row_term = (g.to(x.dtype) - half_sq_norms(y.to(x.dtype), lambda_x)) / e
    if eps is not None:
        row_term = row_term + torch.log(bw)
    f = torch.empty(n, dtype=x.dtype, device=x.device)
    where = torch.empty(n, dtype=torch.int64, device=x.device) if argmin else None
    work = torch.empty((min(batch_size, n), y.shape[0]), dtype=x.dtype, device=x.device)
    bar = Progress(desc, n, unit="pt", disable=not progress)
    for start in range(0, n, batch_size):
        rows = slice(start, min(n, start + batch_size))
        z = torch.addmm(row_term, x[rows], yt, out=work[: rows.stop - rows.start])
        if extra_cost is not None:
            z.sub_(extra_cost(rows), alpha=1.0 / e)
        if where is not None:
            red, where[rows] = z.max(dim=1)
        else:
            red = z.amax(dim=1)
        if eps is not None:  # log-sum-exp in place: red + log Σ_j exp(z_ij − red_i)
            red += z.sub_(red[:, None]).exp_().sum(dim=1).log_()
        f[rows] = hx[rows] - e * red
        bar.update(rows.stop - rows.start)
    bar.close()
    return _np(f), None if where is None else where.cpu().numpy()


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64) if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)
