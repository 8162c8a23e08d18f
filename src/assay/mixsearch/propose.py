"""Propose: the mixture a fitted regressor predicts best, within the repetition caps.

* ``simulation`` (RegMix, Liu et al. 2024): score many Dirichlet(strength · prior) samples with the
  fit, keep those within the caps, average the best k (RegMix: 100k samples, k = 128). The mean of
  feasible mixtures is feasible (the caps form a convex set).
* ``optimize``: minimise prediction + λ·KL(x ‖ prior) over {x ≥ 0, Σx = 1, x ≤ cap}. A law that is
  convex in the weights (linear, log-linear, BiMix, AutoScale) is solved exactly with cvxpy, as
  allenai/olmix's exact proposer; another smooth fit (GP) with scipy's SLSQP from the best simulated
  mixtures. Trees have no gradient and are refused (use the simulation).
* ``projektor`` (Kang et al. 2023): projected gradient descent of a Projektor fit on the capped
  simplex, the gradient through the OT distance from its dual potentials
  (:mod:`assay.mixsearch.regressors.projektor`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from assay.cards import MethodCard
from assay.errors import UserError
from assay.mixsearch.mixture import MixtureSpec, as_dict, check_feasible, entropy_kl, project_capped_rows, write_json
from assay.mixsearch.regressors.base import Regressor
from assay.mixsearch.regressors.projektor import ProjektorGradient

ACTIVE_TOL = 1e-5


@dataclass
class ProposalResult:
    weights: np.ndarray
    predicted: float
    proposer: str
    active_caps: list[str] = field(default_factory=list)
    """Domains whose cap binds at the proposal (the proposal would move further if it were raised)."""
    kl_to_prior: Optional[float] = None

    def describe(self, domains: list[str], name: str = "") -> str:
        mix = ", ".join(f"{d} {w:.3f}" for d, w in zip(domains, self.weights))
        caps = f"; binding caps: {', '.join(self.active_caps)}" if self.active_caps else ""
        pred = "" if not np.isfinite(self.predicted) else f"; predicted target {self.predicted:.4f}"
        return f"[assay-mix] {name} {self.proposer}: {mix}{pred}{caps}"


def _predict(model: Regressor, X: np.ndarray, scale: Optional[float]) -> np.ndarray:
    return model.predict(X, None if scale is None else np.full(len(X), scale))


def _active(x: np.ndarray, caps: Optional[np.ndarray], domains: list[str]) -> list[str]:
    if caps is None:
        return []
    return [f"{domains[i]}<={caps[i]:.4g}" for i in np.flatnonzero((x >= caps - ACTIVE_TOL) & (caps < 1 - 1e-12))]


def simulate(model: Regressor, prior: np.ndarray, caps: Optional[np.ndarray], n_samples: int = 100_000, top_k: int = 128,
             strength: float = 1.0, seed: int = 0, scale: Optional[float] = None, maximize: bool = False) -> np.ndarray:
    """RegMix's simulation: the mean of the top-k predicted mixtures among Dirichlet(strength·prior) samples."""
    from assay.mixsearch.swarm import _dirichlet

    rng = np.random.default_rng(seed)
    alpha = np.broadcast_to(strength * prior, (n_samples, len(prior))).copy()
    X = _dirichlet(rng, alpha)
    if caps is not None:
        X = X[(X <= caps[None, :] + 1e-12).all(axis=1)]
        if len(X) < top_k:
            # Caps far from the prior: few random samples survive. Scale the excess of each sample
            # back under the caps (a feasible point of the same direction) instead of rejecting.
            X = project_capped_rows(_dirichlet(rng, alpha), caps)
    y = _predict(model, X, scale)
    order = np.argsort(-y if maximize else y)[: max(1, min(top_k, len(y)))]
    return X[order].mean(axis=0)


def optimize(model: Regressor, prior: np.ndarray, caps: Optional[np.ndarray], kl: float = 0.0, seed: int = 0,
             scale: Optional[float] = None, maximize: bool = False, starts: Optional[np.ndarray] = None) -> np.ndarray:
    m = len(prior)
    upper = np.ones(m) if caps is None else np.asarray(caps, float)
    sign = -1.0 if maximize else 1.0
    if not model.smooth:
        raise UserError("--proposer", "optimize", f"regressor {model.name} is piecewise constant (no gradient); use --proposer simulation")
    if not maximize:
        import cvxpy as cp

        x = cp.Variable(m, nonneg=True)
        expr = model.convex_objective(x, scale)
        if expr is not None:
            obj = expr + (kl * cp.sum(cp.kl_div(x, prior)) if kl > 0 else 0)
            prob = cp.Problem(cp.Minimize(obj), [cp.sum(x) == 1, x <= upper])
            try:
                prob.solve()
            except cp.SolverError:
                prob.solve(solver=cp.SCS)
            if prob.status in ("optimal", "optimal_inaccurate") and x.value is not None:
                v = np.clip(np.asarray(x.value, float), 0, upper)
                return v / v.sum()
    from scipy.optimize import minimize

    def f(v):
        v = np.clip(v, 0, None)
        val = sign * float(_predict(model, v[None, :], scale)[0])
        return val + (kl * entropy_kl(v / max(v.sum(), 1e-12), prior) if kl > 0 else 0.0)

    if starts is None:
        starts = np.vstack([np.minimum(prior, upper), simulate(model, prior, caps, 20_000, 16, seed=seed, scale=scale, maximize=maximize)])
    best, best_val = None, np.inf
    for x0 in starts:
        x0 = project_capped_rows(np.asarray(x0, float)[None, :], upper)[0]
        r = minimize(f, x0, method="SLSQP", bounds=[(0, u) for u in upper], constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}], options={"maxiter": 300, "ftol": 1e-10})
        if r.fun < best_val:
            best, best_val = r.x, r.fun
    v = np.clip(best, 0, upper)
    return v / v.sum()


class Simulation:
    """RegMix's simulation: the mean of the top-k predicted mixtures among Dirichlet(strength·prior) samples."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Liu et al. 2024, RegMix: Data Mixture as Regression for Language Model Pre-training (ICLR 2025)",
        arxiv="2407.01492",
        code="sail-sg/regmix: regression_fitting/regression.ipynb (the simulation step; described from the research note, not re-read)",
        defaults={
            "n_samples": "100,000 (RegMix: 100k Dirichlet samples): follows",
            "top_k": "128 (RegMix: the mean of the best 128): follows",
            "strength": "1.0 (RegMix: Dirichlet(prior × 1.0)): follows",
        },
        deviations=(
            "Repetition caps: samples over a domain's cap are rejected, and when fewer than top_k survive every sample is "
            "projected onto the capped simplex instead; RegMix's simulation has no caps (its cap lives in the swarm generator).",
            "maximize ranks the highest predictions (a target such as accuracy); RegMix minimises a loss.",
            "One round around the prior; olmix's simulation proposer re-centres the prior on the best found over 10 rounds (not done here).",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_propose.py: recovers the known optimum of a synthetic law (hand-built); caps hold "
                "both by rejection and, when too few samples survive, by projection",
        notes="Works with every regressor, trees included. The mean of feasible mixtures is feasible (the caps form a convex set).",
    )

    name = "simulation"
    n_samples = 100_000
    """Dirichlet samples scored (``assay-mix propose --samples``)."""
    top_k = 128
    """The proposal is the mean of the best k (``--top-k``)."""
    strength = 1.0
    """Samples are Dirichlet(strength · prior) (``--strength``)."""

    @staticmethod
    def run(model: Regressor, prior: np.ndarray, caps: Optional[np.ndarray], *, kl: float, n_samples: int, top_k: int,
            strength: float, seed: int, scale: Optional[float], maximize: bool, lr: float) -> np.ndarray:
        return simulate(model, prior, caps, n_samples, top_k, strength, seed, scale, maximize)


class Optimize:
    """Minimise prediction + λ·KL(x ‖ prior) over the capped simplex: exact (cvxpy) for a convex law, SLSQP otherwise."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Olmix (AllenAI), its exact proposer: the fitted law + λ·KL(x ‖ prior) minimised under repetition caps "
              "(paper title and arXiv id not checked)",
        arxiv=None,
        code="allenai/olmix: olmix/fit/utils.py (the exact cvxpy proposer; described from the research note, not re-read)",
        defaults={"kl": "0 (olmix: λ = 0.05): differs: no pull toward the prior unless asked (--kl 0.05 is olmix's setting)"},
        deviations=(
            "A law that is not convex in the weights (the GP) is minimised by scipy's SLSQP from the prior and the best simulated "
            "mixtures: a local optimum, not an exact program; piecewise-constant trees (LightGBM) are refused.",
            "The law is one of assay's regressors of one aggregate target; olmix sums per-task laws Σ_n w_n·exp(A_n x).",
            "maximize (a metric to raise) always goes to SLSQP: only minimisation is posed as a cvxpy program.",
            "Caps come from assay-mix's --budget / --max-repetition (epochs of each domain's pool); olmix caps tokens with a "
            "repetition factor of 4.",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_propose.py: known optimum of a synthetic law, binding caps named, the exact "
                "convex program for the log-linear law, the KL pull toward the prior, trees refused",
    )

    name = "optimize"
    kl = 0.0
    """λ, the weight of KL(x ‖ prior) (``assay-mix propose --kl``)."""

    @staticmethod
    def run(model: Regressor, prior: np.ndarray, caps: Optional[np.ndarray], *, kl: float, n_samples: int, top_k: int,
            strength: float, seed: int, scale: Optional[float], maximize: bool, lr: float) -> np.ndarray:
        return optimize(model, prior, caps, kl, seed, scale, maximize)


PROPOSERS: dict[str, type] = {"simulation": Simulation, "optimize": Optimize, "projektor": ProjektorGradient}
"""The proposers by name (``assay-mix propose --proposer``); each carries its method card."""


def propose(model: Regressor, domains: list[str], proposer: str, prior: np.ndarray, caps: Optional[np.ndarray] = None, kl: float = Optimize.kl,
            n_samples: int = Simulation.n_samples, top_k: int = Simulation.top_k, seed: int = 0, scale: Optional[float] = None, maximize: bool = False,
            strength: float = Simulation.strength, lr: float = ProjektorGradient.lr) -> ProposalResult:
    check_feasible(caps, domains)
    if proposer not in PROPOSERS:
        raise UserError("--proposer", proposer, f"choose one of {sorted(PROPOSERS)}")
    if not model.batch_predict and proposer in ("simulation", "optimize"):
        raise UserError("--proposer", proposer, f"scores thousands of mixtures, and regressor {model.name} solves one OT problem per "
                                                "mixture; use --proposer projektor (its dual-potential gradient)")
    x = PROPOSERS[proposer].run(model, prior, caps, kl=kl, n_samples=n_samples, top_k=top_k, strength=strength, seed=seed, scale=scale,
                                maximize=maximize, lr=lr)
    pred = float(_predict(model, x[None, :], scale)[0])
    return ProposalResult(x, pred, proposer, _active(x, caps, domains), entropy_kl(x, prior))


def write_proposal(out: Path, name: str, result: ProposalResult, domains: list[str], spec: MixtureSpec, meta: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Three forms of one proposal, each usable as it is:

    * ``conf/mixture/<name>.yaml``: a ``mixture`` option (``hydra.searchpath=[file://<out>/conf] mixture=<name>``,
      or copy it into the repository's ``conf/mixture/``);
    * ``<name>.overrides``: the ``assay-train`` arguments, one per line;
    * ``<name>.json``: the weights, the prediction, binding caps and where they came from.
    """
    weights = as_dict(result.weights, domains)
    header = f"proposed by assay-mix ({result.proposer}, {name}); predicted target {result.predicted:.4f}" if np.isfinite(result.predicted) else f"proposed by assay-mix ({result.proposer}, {name})"
    conf = out / "conf" / "mixture"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / f"{name}.yaml").write_text(spec.mixture_yaml(weights, comment=header))
    args = spec.command_line(weights)
    (out / f"{name}.overrides").write_text("\n".join(args) + "\n")
    write_json(out / f"{name}.json", {
        "name": name, "weights": weights, "predicted": result.predicted if np.isfinite(result.predicted) else None,
        "proposer": result.proposer, "binding_caps": result.active_caps, "kl_to_prior": result.kl_to_prior, **(meta or {}),
    })
    return {"args": args, "conf": out / "conf", "name": name}


def read_proposal(path: Path) -> tuple[str, dict[str, float]]:
    """A proposal's name and weights from any of its files (the ``.json`` beside it is read)."""
    path = Path(path)
    if path.suffix != ".json":
        stem = path.stem
        base = path.parent.parent.parent if path.parent.name == "mixture" else path.parent
        path = base / f"{stem}.json"
    if not path.is_file():
        raise UserError("--mixture", str(path), "is not a proposal file (write one with `assay-mix propose`)")
    data = json.loads(path.read_text())
    return data["name"], data["weights"]
