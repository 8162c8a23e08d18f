"""Scale of the OT valuation: time and peak memory of GOT-D's default path (``selection=gotd``) for
growing pools against a fixed target, and the agreement of its ranking with the whole-pool solve and
with exact LP duals (``ot.emd`` on the full cost matrix) where those fit.

    nice -n 10 python benchmarks/ot_scale/run.py --sizes 10000 100000 1000000 --target 5000 --dim 384 \\
        --fit-size 20000 --full-max 100000 --exact-max 10000 --ablate-fits 2000 5000 10000 50000

Default path (``selection.fit_size``): pools up to ``--fit-size`` are solved whole (batched log-domain
Sinkhorn); beyond it the target potential g is fitted on a stratified subsample of that many pool
points and every pool point is valued by the c-transform of g in one streamed pass (see
``assay.ot``). Per pool size the script runs, each in its own process so that the peak
resident memory (ru_maxrss) is that of one solve:

  - the default path (the row that the targets are read from);
  - the whole-pool batched solve, up to ``--full-max`` (reference for the subsample path);
  - exact ``ot.emd``, up to ``--exact-max``;
  - the subsample path at each ``--ablate-fits`` size below N, where a reference exists;
  - beyond ``--full-max``, the subsample path at ``--check-fit`` points, for a self-consistency check.

Each row has wall and process CPU seconds (ru_utime + ru_stime of the child) and the 1-minute load
average before and after. On a shared machine the wall time grows with the load and the CPU time much
less; the children run with OMP_WAIT_POLICY=PASSIVE (``--omp-wait-policy``) so that OpenMP threads
sleep instead of spinning at barriers while the other core is taken by another job, which would
count as CPU time and slow the run. A final summary row fits the time of the N-dependent part (the
two streamed passes) as t0 + slope·N over all subsample rows, and lists the default path's totals.

The embeddings are synthetic, shaped like sentence-encoder output: unit vectors around 50 topic
directions (pool and target share the topics; the target draws from 10 of them 4× more often).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def embeddings(n: int, m: int, dim: int, seed: int = 0, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Pool (n × dim) and target (m × dim) float32 unit vectors; the noise is drawn in chunks (the same
    random stream as one draw) so that a million-row pool never holds a float64 copy."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(50, dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)

    def draw(count, weights):
        t = rng.choice(50, size=count, p=weights)
        out = np.empty((count, dim), dtype=np.float32)
        for s in range(0, count, chunk):
            z = topics[t[s : s + chunk]] + rng.normal(scale=0.06, size=(min(chunk, count - s), dim)).astype(np.float32)  # cosine ≈ 0.6 within a topic
            out[s : s + chunk] = z / np.linalg.norm(z, axis=1, keepdims=True)
        return out

    pool_w = np.full(50, 1 / 50)
    target_w = np.where(np.arange(50) < 10, 4.0, 1.0)
    return draw(n, pool_w), draw(m, target_w / target_w.sum())


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(args: argparse.Namespace) -> dict:
    import torch

    from assay.ot import SolverOptions, ot_values

    torch.set_num_threads(args.threads)
    x, y = embeddings(args.n, args.target, args.dim)
    solver = "exact" if args.method == "exact" else "batched"
    fit = args.fit if args.method == "subsample" else None
    wall, cpu = time.perf_counter(), cpu_seconds()
    r = ot_values(x, y, SolverOptions(
        solver=solver, reg=args.reg, tol=args.tol, max_iter=args.max_iter, batch_size=args.batch_size, cache_gib=args.cache_gib,
        eps_scaling=args.eps_scaling or None, fit_size=fit, seed=args.seed, progress=args.progress,
    ))
    out = {
        "n": args.n, "method": args.method, "solver": r.solver, "fit_requested": fit, "fit_size": r.fit_size, "sweeps": r.sweeps,
        "seconds": round(time.perf_counter() - wall, 1), "cpu_seconds": round(cpu_seconds() - cpu, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2), "timings": r.timings,
    }
    np.save(args.save, r.values)
    return out


def spawn(args: argparse.Namespace, n: int, method: str, fit: int | None, save: str) -> dict:
    cmd = [sys.executable, __file__, "--one", "--n", str(n), "--method", method, "--target", str(args.target), "--dim", str(args.dim),
           "--reg", str(args.reg), "--tol", str(args.tol), "--max-iter", str(args.max_iter), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--cache-gib", str(args.cache_gib), "--eps-scaling", str(args.eps_scaling), "--seed", str(args.seed),
           "--save", save]
    if fit is not None:
        cmd += ["--fit", str(fit)]
    if args.progress:
        cmd += ["--progress"]
    env = dict(os.environ)
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if args.progress else subprocess.PIPE, text=True, check=False, env=env)
    if proc.returncode != 0:
        sys.exit(f"{method} at n={n} failed:\n{proc.stderr}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["load_before"], row["load_after"] = round(load, 2), round(os.getloadavg()[0], 2)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--target", type=int, default=5000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--fit-size", type=int, default=20_000, help="the default path's selection.fit_size (0 = always the whole pool)")
    p.add_argument("--full-max", type=int, default=100_000, help="largest pool also solved whole with the batched Sinkhorn (reference)")
    p.add_argument("--exact-max", type=int, default=10_000, help="largest pool also solved exactly with ot.emd")
    p.add_argument("--ablate-fits", type=int, nargs="*", default=[2000, 5000, 10_000, 50_000], help="other fit sizes, run where a reference exists")
    p.add_argument("--check-fit", type=int, default=50_000, help="beyond --full-max: a second fit size to compare the default path with (0 = none)")
    p.add_argument("--reg", type=float, default=0.01, help="ε relative to the mean cost (selection.reg)")
    p.add_argument("--eps-scaling", type=float, default=0.5, help="ε annealing factor per sweep; 0 = none (selection.eps_scaling)")
    p.add_argument("--tol", type=float, default=1e-2, help="L1 marginal error to stop at (selection.tol)")
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-gib", type=float, default=2.0, help="cost blocks kept between sweeps (selection.cache_gib)")
    p.add_argument("--seed", type=int, default=0, help="subsample seed (selection.seed)")
    p.add_argument("--omp-wait-policy", default="PASSIVE", help="OMP_WAIT_POLICY of the solves ('' = leave the environment's)")
    p.add_argument("--progress", action="store_true", help="show the solvers' progress bars")
    p.add_argument("--out", default="benchmarks/ot_scale/results.jsonl")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--method", default="subsample", help=argparse.SUPPRESS)
    p.add_argument("--fit", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    with tempfile.TemporaryDirectory(prefix="ot_scale_") as tmp:  # value vectors, only for the Spearman correlations
        run_all(args, tmp)


def run_all(args: argparse.Namespace, tmp: str) -> None:
    from scipy.stats import spearmanr

    settings = dict(target=args.target, dim=args.dim, reg=args.reg, tol=args.tol, threads=args.threads, cache_gib=args.cache_gib,
                    eps_scaling=args.eps_scaling, batch_size=args.batch_size, omp_wait_policy=args.omp_wait_policy or None)

    def rho(a: str, b: str) -> float:
        return round(float(spearmanr(np.load(a), np.load(b)).statistic), 4)

    all_rows: list[dict] = []

    def emit(log, row: dict) -> None:
        row.update(settings)
        all_rows.append(row)
        print(json.dumps(row), flush=True)
        log.write(json.dumps(row) + "\n")
        log.flush()

    default_rows = []
    with open(args.out, "a") as log:
        for n in args.sizes:
            sub = bool(args.fit_size) and n > args.fit_size
            main_file = f"{tmp}/default_{n}.npy"
            row = spawn(args, n, "subsample" if sub else "full", args.fit_size if sub else None, main_file)
            row["role"] = "default"
            refs = {}
            if n <= args.full_max:
                refs["full"] = main_file if not sub else f"{tmp}/full_{n}.npy"
                if sub:
                    emit(log, {**spawn(args, n, "full", None, refs["full"]), "role": "reference"})
            if n <= args.exact_max:
                refs["exact"] = f"{tmp}/exact_{n}.npy"
                ex = spawn(args, n, "exact", None, refs["exact"])
                if "full" in refs and refs["full"] != main_file:
                    ex["spearman_vs_full"] = rho(refs["exact"], refs["full"])
                emit(log, {**ex, "role": "reference"})
            others = [f for f in args.ablate_fits if f < n] if refs else ([args.check_fit] if args.check_fit and args.check_fit < n and sub else [])
            for name, path in refs.items():
                if path != main_file:
                    row[f"spearman_vs_{name}"] = rho(main_file, path)
            emit(log, row)
            default_rows.append(row)
            for fit in others:
                path = f"{tmp}/fit{fit}_{n}.npy"
                r = spawn(args, n, "subsample", fit, path)
                r["role"] = "ablation" if refs else "check"
                for name, ref in refs.items():
                    r[f"spearman_vs_{name}"] = rho(path, ref)
                r["spearman_vs_default"] = rho(path, main_file)
                emit(log, r)
        # Linearity: the part of the subsample path that depends on N is the two streamed passes
        # (nearest-target strata + c-transform); the fit is on a fixed number of points. Fit
        # pass time = t0 + slope·N over every subsample row (all fit sizes, all pool sizes).
        sub_rows = [r for r in all_rows if r.get("method") == "subsample"]
        if len({r["n"] for r in sub_rows}) >= 2:
            ns = np.array([r["n"] for r in sub_rows], dtype=float)
            summary: dict = {"summary": "streamed passes (strata + c-transform): time = t0 + slope·N over all subsample rows", "sizes": sorted({int(v) for v in ns})}
            for clock in ("wall", "cpu"):
                t = np.array([r["timings"][f"stratify_{clock}_s"] + r["timings"][f"extend_{clock}_s"] for r in sub_rows])
                slope, t0 = np.polyfit(ns, t, 1)
                summary[f"pass_{clock}"] = {
                    "t0_s": round(float(t0), 2), "per_1k_points_s": round(float(slope * 1000), 4),
                    "max_abs_residual_s": round(float(np.max(np.abs(t - t0 - slope * ns))), 2),
                    "per_1k_points_by_n": {str(int(n)): round(float(1000 * t[ns == n].mean() / n), 4) for n in sorted(set(ns))},
                }
            summary["default_path"] = {str(r["n"]): {"seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"], "method": r["method"]} for r in default_rows}
            emit(log, summary)

if __name__ == "__main__":
    main()
