"""What LAVA and GOT-D share as selection entries: the config of the OT valuation, embedding the pool
and the target once, and the checks that name the config field at fault.

The numerics (costs, solvers, the calibrated gradient, the subsample fit) are ``assay.ot``; its
package docstring derives the value. Scorers return the keep score −value: higher value = moving
mass onto the point increases the distance to the target = the point is more harmful.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np

from assay.errors import UserError, check
from assay.ot import SOLVERS, Labels, OTResult, SolverOptions, ot_values
from assay.selection.base import ModelSource, Scorer, SelectionContext, TargetSet


# --------------------------------------------------------------------------------------------------
# Input checks: one line each, naming what is wrong


def check_embeddings(x: np.ndarray, what: str, field_: str = "selection.embedder") -> np.ndarray:
    x = np.asarray(x)
    check(x.ndim == 2, field_, what, f"embeddings must be a 2-d array (examples × dim); got shape {x.shape}")
    check(x.shape[0] > 0, "selection.target_split" if "target" in what else field_, what, "is empty: the OT valuation needs at least one example on each side")
    # A row sum is non-finite whenever the row holds a NaN/inf; only those rows get the element mask
    # (no N×d boolean temporary for a million-row pool).
    suspect = np.flatnonzero(~np.isfinite(x.sum(axis=1, dtype=np.float64)))
    bad = ~np.isfinite(x[suspect])
    if bad.any():
        rows = suspect[bad.any(axis=1)]
        raise UserError(field_, what, f"embeddings contain {int(bad.sum())} NaN/inf values in {len(rows)} rows (first rows {rows[:5].tolist()}); all values must be finite")
    return x


def check_pair(x: np.ndarray, y: np.ndarray) -> None:
    check_embeddings(x, "pool")
    check_embeddings(y, "target")
    check(
        x.shape[1] == y.shape[1], "selection.embedder", f"pool dim {x.shape[1]} vs target dim {y.shape[1]}",
        "pool and target embeddings must have the same dimension (embed both with one embedder)",
    )


def check_classes(train_labels: np.ndarray, target_labels: np.ndarray, column: str) -> list:
    """The class sets of pool and target must match: the label cost compares class-conditional
    distributions one-to-one across the two sets, and a class seen on one side only has no partner."""
    tr, tg = set(train_labels.tolist()), set(target_labels.tolist())
    missing = sorted(tg - tr, key=str)
    check(not missing, "selection.label_column", column, f"target classes {missing} do not occur in the training pool; use matching classes or selection.label_column=null")
    extra = sorted(tr - tg, key=str)
    check(not extra, "selection.label_column", column, f"training classes {extra} do not occur in the target set; use matching classes or selection.label_column=null")
    return sorted(tr, key=str)


def check_fit_size(fit_size: Optional[int]) -> None:
    check(
        fit_size is None or (isinstance(fit_size, (int, np.integer)) and not isinstance(fit_size, bool) and fit_size >= 0),
        "selection.fit_size", fit_size, "must be a non-negative integer (pool points to fit the potentials on) or 0/null for the whole pool",
    )


# --------------------------------------------------------------------------------------------------
# The shared selection entry


@dataclass
class OTSelection(ModelSource, Scorer, TargetSet):
    """Score = −(OT value): the points that bring the pool closest to the target rank first; any selector applies."""

    embedder: str = "minilm"
    """Embedder name (registry ``embedder``: hidden_mean, minilm, column)."""
    embedder_options: dict[str, Any] = field(default_factory=dict)
    """Fields of the chosen embedder, e.g. ``{weighting: position}`` for hidden_mean."""
    solver: str = "auto"
    """``exact`` (ot.emd), ``sinkhorn`` (ot.sinkhorn, log domain, full cost matrix), ``batched``
    (log-domain Sinkhorn on cost blocks, memory O(batch·M)), or ``auto`` (sinkhorn up to
    ``dense_max_cells`` = N·M, batched beyond). LP duals (exact) are unique only up to one constant per
    connected block of the optimal plan: when the data fall in well-separated groups (skills, domains)
    each block's potentials float freely and values are comparable only within a block. The entropic
    plan is dense, so its duals are unique up to one global constant; LAVA's own solver is entropic too."""
    reg: float = 0.01
    """Entropic regulariser ε relative to the mean ground cost (ε = reg · mean C). Smaller = closer to
    the exact LP duals, more sweeps: on 10k × 5k sentence-like embeddings the Spearman correlation
    with exact ``ot.emd`` values was 0.83 at 0.05, 0.92 at 0.02, 0.97 at 0.01 (benchmarks/README.md)."""
    max_iter: int = 1000
    """Sinkhorn iterations (sweeps, for batched) at most."""
    tol: float = 1e-2
    """Stop when the L1 error of the target-side marginal is below this (GOT-D's ott-jax run stops at
    0.1). At 1e-2 vs 1e-3 the 10k-pool ranking against exact duals was 0.966 vs 0.968 (Spearman) in
    44 vs 61 sweeps."""
    batch_size: int = 2048
    """Pool rows per cost block (batched solver, and the streamed passes over a large pool)."""
    dense_max_cells: int = 25_000_000
    """Largest N·M solved with the full cost matrix (25M float64 cells = 200 MB each)."""
    cache_gib: float = 2.0
    """Batched solver: keep cost blocks between sweeps up to this many GiB (0 = recompute each sweep;
    a 100k × 5k pool/target pair takes 1.9 GiB in float32). Beyond it blocks are recomputed."""
    eps_scaling: Optional[float] = 0.5
    """Batched solver: anneal ε from the mean cost down to ε by this factor per sweep (null = start at ε)."""
    fit_size: Optional[int] = 20_000
    """Pools larger than this are valued out of sample: the target-side potential g is fitted on a
    seeded subsample of about this many pool points, stratified by nearest target point (and class;
    every non-empty stratum keeps at least one point, so the subsample has at least about M points),
    and every pool point gets f_i by the soft c-transform of g in one streamed pass, so the time
    beyond the fixed-size fit is linear in N. Pools up to this size are solved whole; 0/null = always
    whole. On 100k × 5k sentence-like embeddings the ranking agreed with the whole-pool solve at
    Spearman 0.995 / 0.9975 / 0.9994 for 10k / 20k / 50k fitted points (benchmarks/ot_scale)."""
    budget: ClassVar[float] = 0.8
    """Share of the pool kept with selector=top: LAVA drops the most harmful fifth by default."""

    def __post_init__(self) -> None:
        self.embedder_config()  # names an unknown embedder or field now
        check(self.solver in SOLVERS, "selection.solver", self.solver, f"must be one of {list(SOLVERS)}")
        check(self.reg > 0, "selection.reg", self.reg, "must be > 0")
        check(self.max_iter > 0, "selection.max_iter", self.max_iter, "must be a positive integer")
        check(self.tol > 0, "selection.tol", self.tol, "must be > 0")
        check(self.batch_size > 0, "selection.batch_size", self.batch_size, "must be a positive integer")
        check(self.cache_gib >= 0, "selection.cache_gib", self.cache_gib, "must be >= 0")
        check(self.eps_scaling is None or 0 < self.eps_scaling < 1, "selection.eps_scaling", self.eps_scaling, "must be in (0, 1) or null")
        check_fit_size(self.fit_size)
        super().__post_init__()

    def embedder_config(self) -> Any:
        from assay.embeddings.build import build_embedder

        return build_embedder(self.embedder, self.embedder_options)

    @property
    def needs_model(self) -> bool:
        return self.embedder_config().needs_model

    @property
    def data_columns(self) -> tuple[str, ...]:
        return self.embedder_config().data_columns

    def embed(self, ctx: SelectionContext) -> tuple[np.ndarray, np.ndarray, Any]:
        """Pool and target embeddings (one embedder for both), and the target split."""
        target = self.target(ctx)
        embedder = self.embedder_config()
        x = embedder.embed(ctx.train, ctx.model, ctx.tokenizer, ctx.cache_dir)
        y = embedder.embed(target, ctx.model, ctx.tokenizer, ctx.cache_dir)
        return x, y, target

    def options(self) -> SolverOptions:
        return SolverOptions(
            solver=self.solver, reg=self.reg, max_iter=self.max_iter, tol=self.tol, batch_size=self.batch_size,
            dense_max_cells=self.dense_max_cells, cache_gib=self.cache_gib, eps_scaling=self.eps_scaling,
            fit_size=self.fit_size, seed=self.seed,
        )

    def solve(self, x: np.ndarray, y: np.ndarray, labels: Optional[Labels] = None, label_column: str = "label", lambda_x: float = 1.0) -> OTResult:
        """OT values of the pool embeddings ``x`` against the target's ``y`` (inputs checked first)."""
        check_pair(x, y)
        if labels is not None:
            check_classes(np.asarray(labels.x), np.asarray(labels.y), label_column)
        try:
            return ot_values(x, y, self.options(), labels, lambda_x)
        except RuntimeError as e:
            if "network simplex" not in str(e):
                raise
            raise UserError("selection.solver", self.solver, str(e)) from None

    def save_values(self, ctx: SelectionContext, result: OTResult) -> None:
        """The raw OT values beside the selection artefact (keyed by id), for analyses."""
        if ctx.run_dir is None or (ctx.splits is not None and "train" in ctx.splits and ctx.train is not ctx.splits["train"]):
            return  # only the training pool's values (not, e.g., an anchor split scored for a threshold)
        import pandas as pd

        pd.DataFrame({"id": list(ctx.train["id"]), "ot_value": result.values, "potential": result.f}).to_parquet(
            ctx.run_dir / "ot_values.parquet", index=False
        )
