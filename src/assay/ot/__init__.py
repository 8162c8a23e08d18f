"""Optimal-transport numerics for data valuation: ground costs, dual solvers and the calibrated
gradient of OT(pool, target) with respect to each pool point's mass.

Pure numerics on arrays and tensors: no configuration, registry or dataset. The scorers that use it
(LAVA and GOT-D, ``assay.selection.scorers.ot``) embed pool and target and pass the arrays in.

Both methods value a pool point z_i by how the OT distance between the pool μ_t and a target ν moves
when z_i gets a little more mass. With uniform weights and dual potentials (f, g) of OT(μ_t, ν), that
derivative, restricted to perturbations that keep μ_t a probability vector, is the *calibrated
gradient* (LAVA, Just et al. ICLR 2023, arXiv 2305.00054, eq. for ∂OT/∂μ_t(z_i)):

    value_i = f_i − Σ_{j≠i} f_j / (N − 1)

Higher value = moving mass onto z_i *increases* the distance to the target = the point is more
harmful / further from the target. The value does not change when a constant is added to f, so the
non-uniqueness of duals up to a shift does not matter.

Solvers (``assay.ot.solvers``; all with POT, https://pythonot.github.io):
  - ``exact``: ``ot.emd(a, b, M, log=True)``: ``log['u']`` are true LP duals (network simplex on CPU),
    unique only up to a constant per connected block of the optimal plan.
  - ``sinkhorn``: ``ot.sinkhorn(..., method="sinkhorn_log", log=True)``: there ``log['log_u']`` is
    the log of the Sinkhorn *scaling*; the potential is f = ε·log u (using u itself, as some ports do,
    keeps the ranking but not the values).
  - ``batched``: the same log-domain Sinkhorn iterations, with the cost computed block by block from
    the embeddings, so memory is O(batch·M) and never O(N·M) (the GOT-D recipe solves 5M candidates
    this way with ott-jax's online ``PointCloud``).

Large pools (``SolverOptions.fit_size``): entropic potentials extend out of sample. Given the
target-side potential g, a pool point's potential is the soft c-transform

    f_i = −ε log Σ_j b_j exp((g_j − C_ij)/ε),

which is the Sinkhorn row update itself, so at convergence it reproduces f on every point the solve
saw (the smoothed c-transform of the entropic semi-dual: Genevay, Cuturi, Peyré, Bach 2016, arXiv
1605.08527; Peyré & Cuturi 2019, Computational Optimal Transport, §5.3). g depends on the pool only
through its distribution, so it is fitted by Sinkhorn on a seeded subsample of about ``fit_size``
pool points, and one streamed c-transform pass then values the whole pool: the solve does not grow
with N, the pass is linear in N with memory O(batch·M). Entropic OT estimated from n samples
converges at the parametric 1/√n rate, with constants that grow as ε shrinks (Genevay, Chizat, Bach,
Cuturi, Peyré 2019, arXiv 1810.02733, bounded supports; Mena & Niles-Weed 2019, arXiv 1905.11882,
subgaussian measures); those bounds are for the OT cost, so the agreement of the resulting
*ranking* with the whole-pool solve is measured instead (benchmarks/ot_scale).

The subsample is stratified by nearest target point (and by class with labels), with weights that
give it exactly the pool's mass in every stratum. At small ε, g_j is set by the pool mass that
competes for target j, which lies in and around j's cell; and well-separated groups of the pool
(domains, skills, classes) are unions of cells. A uniform subsample gets each group's share wrong by
its sampling noise (a standard deviation of about √(p/fit_size) for pool share p), and the duals
then shift whole groups against each other, a shift the whole-pool solve does not have when pool
and target shares agree; LAVA's label cost does the same to classes. Matching the strata removes
that noise; the strata cost one more matmul pass over the pool. For ``exact`` the extension is the
hard c-transform f_i = min_j (C_ij − g_j), equal to the LP dual u_i on every point of the solve
(complementary slackness).

The entropic regulariser is given relative to the mean ground cost (ε = reg · mean C), so one value
works for any embedder's scale. Tensors go through POT's torch backend, on the GPU when there is one.
"""

from assay.ot.costs import Labels, LabelCost, feature_cost, half_sq_norms, label_distances, mean_feature_cost
from assay.ot.solvers import (
    SOLVERS,
    Potentials,
    SolverOptions,
    batched_potentials,
    c_transform,
    device,
    exact_potentials,
    nearest_target,
    sinkhorn_potentials,
    solve,
)
from assay.ot.values import OTResult, calibrated_gradient, fit_subsample, ot_values

__all__ = [
    "SOLVERS", "LabelCost", "Labels", "OTResult", "Potentials", "SolverOptions", "batched_potentials", "c_transform",
    "calibrated_gradient", "device", "exact_potentials", "feature_cost", "fit_subsample", "half_sq_norms", "label_distances",
    "mean_feature_cost", "nearest_target", "ot_values", "sinkhorn_potentials", "solve",
]
