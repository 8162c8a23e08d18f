"""Target log-probs through the language-model head: chunked (``assay.objectives.lm_head.target_logps``,
logits recomputed in backward) against the full logits (``log_softmax(hidden @ W.T).gather``).

    .venv/bin/python benchmarks/lm_head/run.py --positions 800 --hidden 576 --vocab 49152 --threads 1 --repeats 5

One step is forward + backward of Σ_m u_m · log p(y_m) (u a fixed random weight per position) with
respect to the hidden states [M, H] and the head [V, H], both float32 and requiring grad, as in full
fine-tuning of SmolLM2-135M (defaults: its hidden width and vocabulary). Each contender runs in its
own process: after the inputs are built, one warm-up step and --repeats timed steps; the reported
wall time is the median step, and the memory is the increase of the peak resident set (``ru_maxrss``)
over the resident set once the inputs exist (it includes the [V, H] weight gradient both produce).
Both processes build the same inputs from one seed; their log-probs and gradients are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rss_mib() -> float:
    """Current resident set (MiB), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args) -> dict:
    import torch
    import torch.nn.functional as F

    from assay.objectives.lm_head import chunk_rows, target_logps

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.positions, args.hidden, generator=g).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden, generator=g) * args.hidden**-0.5).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.positions,), generator=g)
    upstream = torch.randn(args.positions, generator=g)

    if args.child == "fused":
        def logps():
            return target_logps(hidden, weight, targets, chunk_size=args.chunk).logps
    else:
        def logps():
            return F.log_softmax((hidden @ weight.T).float(), -1).gather(1, targets[:, None]).squeeze(1)

    def step():
        lp = logps()
        gh, gw = torch.autograd.grad((lp * upstream).sum(), (hidden, weight))
        return lp.detach(), gh, gw

    # Load the kernels' code on a two-row step first, so the baseline holds it and the increase is data.
    small = (hidden[:2].detach().requires_grad_(), targets[:2], upstream[:2])
    if args.child == "fused":
        lp = target_logps(small[0], weight, small[1], chunk_size=args.chunk).logps
    else:
        lp = F.log_softmax((small[0] @ weight.T).float(), -1).gather(1, small[1][:, None]).squeeze(1)
    torch.autograd.grad((lp * small[2]).sum(), (small[0], weight))
    del lp, small
    base = rss_mib()
    step()  # warm-up
    times = []
    for _ in range(args.repeats):
        lp = gh = gw = None  # the last step's outputs go before the next step makes its own
        t0 = time.perf_counter()
        lp, gh, gw = step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "contender": args.child, "median_s": statistics.median(times), "min_s": min(times), "times_s": times,
        "peak_increase_mib": peak - base, "rss_after_inputs_mib": base,
        "chunk_rows": chunk_rows(args.vocab, args.chunk) if args.child == "fused" else None,
        "logps": lp.tolist()[:8], "sum_logps": float(lp.double().sum()),
        "grad_hidden_norm": float(gh.double().norm()), "grad_weight_norm": float(gw.double().norm()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--positions", type=int, default=800, help="scored positions M")
    p.add_argument("--hidden", type=int, default=576, help="hidden width H")
    p.add_argument("--vocab", type=int, default=49152, help="vocabulary V")
    p.add_argument("--threads", type=int, default=1, help="torch threads per contender")
    p.add_argument("--repeats", type=int, default=5, help="timed steps after one warm-up")
    p.add_argument("--chunk", type=int, default=None, help="rows per chunk (default: the 64 MiB rule)")
    p.add_argument("--child", choices=["fused", "unfused"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    results = {}
    for name in ("unfused", "fused"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", name]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])

    a, b = results["unfused"], results["fused"]
    full_mib = args.positions * args.vocab * 4 / 2**20
    print(f"M={args.positions} H={args.hidden} V={args.vocab} threads={args.threads} repeats={args.repeats}; "
          f"one [M, V] float32 tensor = {full_mib:.0f} MiB; fused chunk = {b['chunk_rows']} rows")
    print("| contender | median fwd+bwd (s) | min (s) | peak RSS increase (MiB) |")
    print("|---|---:|---:|---:|")
    for r in (a, b):
        label = "unfused: log_softmax(hidden @ W.T).gather" if r is a else "fused: target_logps (chunked, recompute)"
        print(f"| {label} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['peak_increase_mib']:.0f} |")
    print(f"time fused / unfused: {b['median_s'] / a['median_s']:.2f}; peak increase fused / unfused: "
          f"{b['peak_increase_mib'] / a['peak_increase_mib']:.2f}")
    rel = lambda x, y: abs(x - y) / max(abs(y), 1e-30)  # noqa: E731
    print(f"agreement (relative): sum log p {rel(b['sum_logps'], a['sum_logps']):.1e}, |grad hidden| "
          f"{rel(b['grad_hidden_norm'], a['grad_hidden_norm']):.1e}, |grad W| {rel(b['grad_weight_norm'], a['grad_weight_norm']):.1e}")


if __name__ == "__main__":
    main()
