"""Direct Data Optimization and AutoScale (Kang et al. 2024, arXiv 2407.20177; feiyang-k/AutoScale).

DDO at one budget: train a base run with amounts n_i (examples of domain i), then for each domain
one run with n_i × f and one with n_i / f, the others unchanged (2m + 1 runs; f = 3 in the paper).
Per domain, fit the target as a function of the amount multiplier x:

    f_i(x) = (x + a_i)^(−b_i) + c_i            (three points, three parameters: scipy curve_fit)

Assume the effects add up (the paper's separability), L(x) ≈ L_base + Σ_i [f_i(x_i) − f_i(1)], and
minimise it at the same total budget Σ_i x_i n_i = Σ_i n_i, with x_i ≥ a floor (the notebook fixes a
domain that goes negative at 0.2×). The paper uses projected gradient descent; here scipy's SLSQP
solves the same convex program.

AutoScale: each domain's optimal amount grows exponentially in log(budget), so from the DDO optima at
budgets B1 < B2,  log N_i*(B) = log N_i*(B1) + (log B − log B1)/(log B2 − log B1) · (log N_i*(B2) − log N_i*(B1)),
which for B = B2²/B1 is the paper's N(3)* = N(2)* ⊙ (N(2)* / N(1)*). The weights are N*(B) / Σ N*(B).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from assay.errors import UserError, check
from assay.mixsearch.mixture import Mixture, MixtureSpec, as_dict, normalise, parse_mixture, write_json

A_FLOOR_MARGIN = 1e-3
B_MAX = 10.0


def power_law(x, a, b, c):
    return np.power(x + a, -b) + c


def fit_power_law(x: np.ndarray, y: np.ndarray, x_min: float) -> tuple[float, float, float]:
    """f(x) = (x + a)^(−b) + c through DDO's three points (x = 1/f, 1, f), with x + a > 0 wherever it
    is evaluated (down to ``x_min``) and b ≥ 0 (more of a domain never raises its own term).

    Three points do not always determine the law: two different (a, b, c) can pass through all
    three exactly (e.g. (0.5, 0.3, ·) and (1.33, 0.98, ·) through the same points), and which one a
    local optimiser reaches depends on its version. Among the exact fits (residual within rounding
    of the best), the one with the smallest exponent b is taken: the flattest law that explains the
    data, so the extrapolation claims no more curvature than the points show."""
    from scipy.optimize import curve_fit

    fits = []
    lo = (-x_min + A_FLOOR_MARGIN, 0.0, -np.inf)
    hi = (50.0, B_MAX, np.inf)
    for a0 in (0.0, 0.5, 2.0):
        for b0 in (0.1, 0.5, 1.0, 2.0):
            c0 = float(y.min()) - (x.max() + a0) ** (-b0)
            try:
                p, _ = curve_fit(power_law, x, y, p0=(a0, b0, c0), bounds=(lo, hi), max_nfev=20000, ftol=1e-14, xtol=1e-14, gtol=1e-14)
            except RuntimeError:
                continue
            fits.append((float(np.sum((power_law(x, *p) - y) ** 2)), p))
    if not fits:
        raise UserError("ddo", "fit", "the power law did not converge on any start")
    best_err = min(err for err, _ in fits)
    tolerance = best_err + 1e-12 * max(1.0, float(np.sum(y ** 2)))
    best = min((p for err, p in fits if err <= tolerance), key=lambda p: (p[1], p[0]))
    return float(best[0]), float(best[1]), float(best[2])


@dataclass
class DDOResult:
    domains: list[str]
    budget: float
    base_amounts: list[float]
    params: list[tuple[float, float, float]]
    """(a_i, b_i, c_i) per domain."""
    amounts: list[float]
    """Optimal amount of each domain at this budget."""
    predicted: float
    base_target: float
    target: str = ""

    @property
    def weights(self) -> Mixture:
        return as_dict(np.array(self.amounts), self.domains)

    def weights_vector(self) -> np.ndarray:
        a = np.array(self.amounts, float)
        return a / a.sum()

    def describe(self) -> str:
        w = ", ".join(f"{d} {v:.3f}" for d, v in self.weights.items())
        laws = "; ".join(f"{d}: a={a:.3g} b={b:.3g} c={c:.3g}" for d, (a, b, c) in zip(self.domains, self.params))
        return (f"[assay-mix] DDO at budget {self.budget:g}: {w}\n  predicted {self.target} {self.predicted:.4f} "
                f"(base run {self.base_target:.4f})\n  per-domain laws f(x)=(x+a)^-b+c: {laws}")

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "DDOResult":
        p = Path(path)
        if p.is_dir():
            p = p / "ddo.json"
        if not p.is_file():
            raise UserError("--ddo", str(path), "has no ddo.json; fit it first with `assay-mix ddo <dir> --fit`")
        data = json.loads(p.read_text())
        data["params"] = [tuple(v) for v in data["params"]]
        return cls(**data)


def ddo_design(domains: list[str], base_amounts: np.ndarray, factor: float) -> list[tuple[str, np.ndarray]]:
    """The 2m + 1 runs: ('base', n), ('up_<d>', n with n_d × f), ('down_<d>', n with n_d / f)."""
    check(factor > 1, "--factor", factor, "must be > 1")
    runs = [("base", base_amounts.copy())]
    for i, d in enumerate(domains):
        for tag, mult in (("up", factor), ("down", 1.0 / factor)):
            n = base_amounts.copy()
            n[i] *= mult
            runs.append((f"{tag}_{d}", n))
    return runs


def ddo_solve(domains: list[str], base_amounts: np.ndarray, runs: dict[str, float], factor: float, min_factor: float = 0.2, budget: Optional[float] = None) -> tuple[list, np.ndarray, float]:
    """Fit the per-domain laws from the targets of the 2m + 1 runs (by run name) and minimise their sum
    at ``budget`` (default: the base run's total) over amounts with x_i >= ``min_factor``."""
    from scipy.optimize import minimize

    missing = [k for k in ["base"] + [f"{t}_{d}" for d in domains for t in ("up", "down")] if k not in runs]
    check(not missing, "ddo runs", ",".join(missing), "missing (each domain needs its up and down run, plus the base run)")
    x_pts = np.array([1.0 / factor, 1.0, factor])
    params = []
    for d in domains:
        y = np.array([runs[f"down_{d}"], runs["base"], runs[f"up_{d}"]])
        params.append(fit_power_law(x_pts, y, min(min_factor, 1.0 / factor)))
    total = float(base_amounts.sum()) if budget is None else float(budget)
    check(total * 1.0 >= min_factor * float(base_amounts.sum()) * 0 + 1e-9, "budget", total, "must be > 0")

    def loss(x):
        return sum(power_law(x[i], *params[i]) - power_law(1.0, *params[i]) for i in range(len(domains)))

    def grad(x):
        return np.array([-b * (x[i] + a) ** (-b - 1) for i, (a, b, _) in enumerate(params)])

    floor = min_factor * (total / base_amounts.sum())
    cons = [{"type": "eq", "fun": lambda x: float(x @ base_amounts) - total, "jac": lambda x: base_amounts}]
    x0 = np.full(len(domains), total / base_amounts.sum())
    r = minimize(loss, x0, jac=grad, method="SLSQP", bounds=[(floor, None)] * len(domains), constraints=cons, options={"maxiter": 500, "ftol": 1e-12})
    x = np.maximum(r.x, floor)
    return params, x * base_amounts, float(runs["base"] + loss(x))


def autoscale_predict(small: DDOResult, large: DDOResult, budget: float) -> DDOResult:
    check(small.domains == large.domains, "--ddo", f"{small.domains} vs {large.domains}", "both DDO results must cover the same domains")
    check(small.budget < large.budget, "--ddo", f"{small.budget:g}, {large.budget:g}", "give the smaller budget first (two different budgets)")
    check(budget > 0, "--budget", budget, "must be > 0")
    n1, n2 = np.array(small.amounts, float), np.array(large.amounts, float)
    t = (math.log(budget) - math.log(small.budget)) / (math.log(large.budget) - math.log(small.budget))
    n = np.exp(np.log(n1) + t * (np.log(n2) - np.log(n1)))
    return DDOResult(large.domains, float(budget), list(n), large.params, list(n), float("nan"), float("nan"), target=large.target)


# --------------------------------------------------------------------------------------------------
# As a swarm of runs


def ddo_swarm(root: Path, budget: Optional[float], factor: float, base: str, overrides: list[str], spec: MixtureSpec, batch_size: Optional[int],
              steps_key: str, examples_key: str, domains_arg: Optional[str], max_repetition: float, fixed_steps: bool = False):
    """The 2m+1 runs of DDO (Kang et al. 2024): the base amounts, then each domain's amount × and ÷ ``factor``.
    Each run makes one pass over its examples (its steps grow with its data), or with ``fixed_steps``
    every run trains the same steps, those of the largest run's one pass, so a smaller run repeats its
    data: the fitted laws then see the data amount at equal compute, not the amount and the steps together."""
    from assay.mixsearch.pool import pool_sizes
    from assay.mixsearch.swarm import Proxy, Swarm

    if (root / "swarm.json").is_file():
        print(f"[assay-mix] DDO swarm {root} exists; re-launching what has not completed")
        return Swarm.load(root)
    check(budget is not None and budget > 0, "--budget", budget, "DDO needs the base run's number of examples (> 0)")
    sizes = pool_sizes(overrides)
    domains = domains_arg.split(",") if domains_arg else list(sizes)
    unknown = [d for d in domains if d not in sizes]
    check(not unknown, "--domains", ",".join(unknown), f"unknown domain; the pool's domains are {sorted(sizes)}")
    if base == "natural":
        w = np.array([sizes[d] for d in domains], float)
    elif base == "uniform":
        w = np.ones(len(domains))
    else:
        from assay.mixsearch.mixture import as_vector

        w = as_vector(normalise(parse_mixture(base, "--base"), "--base"), domains, "--base")
    w = w / w.sum()
    if batch_size is None:
        batch_size = _batch_size(overrides)
    proxies = []
    design = ddo_design(domains, budget * w, factor)
    largest = max(float(n.sum()) for _, n in design)
    for name, n in design:
        total = float(n.sum())
        for i, d in enumerate(domains):
            if n[i] > max_repetition * sizes[d] + 1e-9:
                raise UserError("--budget", budget, f"run {name} needs {n[i]:.0f} examples of {d!r} but its pool has {sizes[d]} (× max_repetition {max_repetition:g}): the cap of {d} binds; lower the budget or the factor")
        # one pass over the run's examples (or over the largest run's: fixed steps); every key in steps_key gets the step count
        steps = int(math.ceil((largest if fixed_steps else total) / batch_size))
        extra = {examples_key: int(round(total)), **{k: steps for k in steps_key.split(",")}}
        if max_repetition > 1:
            extra["mixture.max_repetition"] = int(math.ceil(max_repetition))
        proxies.append(Proxy(name, as_dict(n / total, domains), extra))
    swarm = Swarm(root=root, domains=domains, proxies=proxies, spec=spec, overrides=overrides, prior=as_dict(w, domains),
                  sizes={d: float(sizes[d]) for d in domains},
                  generator={"method": "ddo", "budget": budget, "factor": factor, "base_amounts": (budget * w).tolist(), "batch_size": batch_size,
                             "fixed_steps": fixed_steps}).write()
    print(f"[assay-mix] DDO: {len(proxies)} runs (base + up/down × {len(domains)} domains) written to {root}")
    return swarm


def _batch_size(overrides: Sequence[str]) -> int:
    for o in overrides:
        if o.startswith("data.batch_size="):
            return int(o.split("=", 1)[1])
    from assay.data.sources import SkillsData

    return SkillsData.batch_size


def ddo_fit_swarm(root: Path, target: str, target_weights: Optional[str], min_factor: float = 0.2) -> DDOResult:
    from assay.mixsearch.swarm import Swarm
    from assay.mixsearch.table import load_table

    swarm = Swarm.load(root)
    gen = swarm.generator
    check(gen.get("method") == "ddo", "ddo", str(root), "is not a DDO swarm (made with `assay-mix ddo`)")
    table = load_table(root, target=target, target_weights=target_weights)
    runs = dict(zip(table.ids, table.y))
    base = np.array(gen["base_amounts"], float)
    params, amounts, pred = ddo_solve(swarm.domains, base, runs, gen["factor"], min_factor)
    result = DDOResult(swarm.domains, float(gen["budget"]), base.tolist(), params, amounts.tolist(), pred, float(runs["base"]), target)
    result.save(root / "ddo.json")
    return result
