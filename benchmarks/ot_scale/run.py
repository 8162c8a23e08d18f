"""Scale of the OT valuation: time and peak memory of the batched log-domain Sinkhorn (GOT-D's solver,
``selection.solver=batched``) for growing pools against a fixed target, and the agreement of its
ranking with exact LP duals (``ot.emd`` on the full cost matrix) where that fits.

    python benchmarks/ot_scale/run.py --sizes 10000 100000 --target 5000 --dim 384 --exact-max 10000 --reg 0.01 --tol 0.01

Each measurement runs in its own process, so the peak resident memory (ru_maxrss) is that of one solve.
The embeddings are synthetic, shaped like sentence-encoder output: unit vectors around 50 topic
directions (pool and target share the topics; the target draws from 10 of them more often).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def embeddings(n: int, m: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(50, dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)

    def draw(count, weights):
        t = rng.choice(50, size=count, p=weights)
        z = topics[t] + rng.normal(scale=0.06, size=(count, dim)).astype(np.float32)  # cosine ≈ 0.6 within a topic
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    pool_w = np.full(50, 1 / 50)
    target_w = np.where(np.arange(50) < 10, 4.0, 1.0)
    return draw(n, pool_w), draw(m, target_w / target_w.sum())


def one(args: argparse.Namespace) -> dict:
    import torch

    from assay.selection.ot import ot_values

    torch.set_num_threads(args.threads)
    x, y = embeddings(args.n, args.target, args.dim)
    started = time.perf_counter()
    r = ot_values(x, y, solver=args.solver, reg=args.reg, tol=args.tol, max_iter=args.max_iter, batch_size=args.batch_size, cache_gib=args.cache_gib, eps_scaling=args.eps_scaling or None, progress=False)
    elapsed = time.perf_counter() - started
    out = {"n": args.n, "solver": r.solver, "seconds": round(elapsed, 1), "sweeps": r.sweeps, "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if args.save:
        np.save(args.save, r.values)
    return out


def spawn(args: argparse.Namespace, n: int, solver: str, save: str | None) -> dict:
    cmd = [sys.executable, __file__, "--one", "--n", str(n), "--solver", solver, "--target", str(args.target), "--dim", str(args.dim),
           "--reg", str(args.reg), "--tol", str(args.tol), "--max-iter", str(args.max_iter), "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--cache-gib", str(args.cache_gib), "--eps-scaling", str(args.eps_scaling)]
    if save:
        cmd += ["--save", save]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--target", type=int, default=5000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--exact-max", type=int, default=10_000, help="largest pool also solved exactly with ot.emd")
    p.add_argument("--reg", type=float, default=0.01, help="ε relative to the mean cost (selection.reg)")
    p.add_argument("--eps-scaling", type=float, default=0.5, help="ε annealing factor per sweep; 0 = none (selection.eps_scaling)")
    p.add_argument("--tol", type=float, default=1e-2, help="L1 marginal error to stop at (selection.tol)")
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-gib", type=float, default=2.0, help="cost blocks kept between sweeps (selection.cache_gib)")
    p.add_argument("--out", default="benchmarks/ot_scale/results.jsonl")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--solver", default="batched", help=argparse.SUPPRESS)
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    from scipy.stats import spearmanr

    tmp = os.path.join(os.path.dirname(args.out) or ".", "_values")
    os.makedirs(tmp, exist_ok=True)
    with open(args.out, "a") as log:
        for n in args.sizes:
            row = spawn(args, n, "batched", f"{tmp}/batched_{n}.npy")
            if n <= args.exact_max:
                exact = spawn(args, n, "exact", f"{tmp}/exact_{n}.npy")
                row["exact_seconds"], row["exact_peak_rss_gib"] = exact["seconds"], exact["peak_rss_gib"]
                row["spearman_vs_exact"] = round(float(spearmanr(np.load(f"{tmp}/batched_{n}.npy"), np.load(f"{tmp}/exact_{n}.npy")).statistic), 4)
            row.update(target=args.target, dim=args.dim, reg=args.reg, tol=args.tol, threads=args.threads, cache_gib=args.cache_gib, eps_scaling=args.eps_scaling)
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
