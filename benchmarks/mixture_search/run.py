"""Fit + propose on a synthetic RegMix-sized table: 512 proxies × 17 domains.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/mixture_search/run.py [--out benchmarks/mixture_search/results.json]

The table's target follows a log-linear mixing law with per-domain power-law curvature plus noise
(so no regressor's own law is exactly true). Reports each regressor's fit time on all 512 rows,
its held-out Spearman/R² on a fifth of the proxies, and the proposal time: RegMix simulation
(100k Dirichlet samples, top-128 mean) and the constrained optimiser (cvxpy/SLSQP; not for trees)
with RegMix-style repetition caps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from assay.mixsearch.fit import heldout_predictions, score
from assay.mixsearch.propose import propose
from assay.mixsearch.regressors import REGRESSORS, make_regressor
from assay.mixsearch.swarm import regmix_swarm
from assay.mixsearch.table import Table


def synthetic_table(n: int = 512, m: int = 17, seed: int = 0) -> tuple[Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    prior = rng.dirichlet(np.full(m, 0.8))
    X = regmix_swarm(prior, n, seed)
    t = rng.normal(0, 0.6, m)
    y = 2.0 + 0.6 * np.exp(X @ t) + 0.05 * ((X + 1e-3) ** -0.15).sum(axis=1) + rng.normal(0, 0.01, n)
    domains = [f"d{i:02d}" for i in range(m)]
    return Table(domains, X, y, [str(i) for i in range(n)], "synthetic/loss"), prior


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    table, prior = synthetic_table()
    caps = np.minimum(1.0, prior * 15)  # RegMix's MAXIMUM_USAGE: at most 15 epochs of a domain's share
    rows = []
    for name in REGRESSORS:
        start, cpu = time.perf_counter(), time.process_time()
        model = make_regressor(name).fit(table.X, table.y)
        fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
        y, p, scheme = heldout_predictions(name, table)
        rho, r2, _ = score(y, p)
        start, cpu = time.perf_counter(), time.process_time()
        sim = propose(model, table.domains, "simulation", prior, caps=caps, n_samples=100_000, top_k=128)
        sim_s, sim_cpu = time.perf_counter() - start, time.process_time() - cpu
        opt_s = opt_cpu = None
        if model.smooth:
            start, cpu = time.perf_counter(), time.process_time()
            propose(model, table.domains, "optimize", prior, caps=caps, kl=0.05)
            opt_s, opt_cpu = time.perf_counter() - start, time.process_time() - cpu
        rows.append({"regressor": name, "fit_s": round(fit_s, 3), "heldout_spearman": round(rho, 3), "heldout_r2": round(r2, 3),
                     "simulation_s": round(sim_s, 3), "optimize_s": None if opt_s is None else round(opt_s, 3),
                     "fit_cpu_s": round(fit_cpu, 3), "simulation_cpu_s": round(sim_cpu, 3), "optimize_cpu_s": None if opt_cpu is None else round(opt_cpu, 3), "sim_predicted": round(float(sim.predicted), 4)})
        print(json.dumps(rows[-1]), flush=True)
    result = {"n": len(table.y), "m": len(table.domains), "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_1min": os.getloadavg()[0], "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall = time on the clock; CPU = this process's CPU time)")
    print("| regressor | fit wall / CPU (s) | held-out Spearman | held-out R² | simulation 100k wall / CPU (s) | optimiser wall / CPU (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        opt = "—" if r["optimize_s"] is None else f"{r['optimize_s']:.2f} / {r['optimize_cpu_s']:.2f}"
        print(f"| {r['regressor']} | {r['fit_s']:.2f} / {r['fit_cpu_s']:.2f} | {r['heldout_spearman']:.3f} | {r['heldout_r2']:.3f} | {r['simulation_s']:.2f} / {r['simulation_cpu_s']:.2f} | {opt} |")


if __name__ == "__main__":
    main()
