"""AutoScale's claim on the skills data: does the DDO optimum move with the budget, and does
AutoScale's extrapolation from two small budgets predict the optimum at a larger one better than
reusing the smaller budget's optimum?

    PYTHONPATH=src python experiments/mixture_search/autoscale_check.py logs/mixsearch/ddo_400 logs/mixsearch/ddo_800 logs/mixsearch/ddo_1600 \
        [--mixtures-out candidates.txt]   # the candidates as `assay-mix validate --mixture name='{...}'` arguments

Ground truth at the largest budget is DDO run there directly (its own 2m+1 runs). Each candidate
mixture is scored by (a) its L1 distance to that optimum and (b) the loss the largest budget's fitted
DDO model predicts for it (the additive per-domain power laws, at that budget's total).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assay.mixsearch.ddo import DDOResult, autoscale_predict, power_law


def ddo_model_loss(result: DDOResult, weights: np.ndarray) -> float:
    base = np.array(result.base_amounts)
    x = weights * base.sum() / base
    return result.base_target + sum(power_law(x[i], *p) - power_law(1.0, *p) for i, p in enumerate(result.params))


def main() -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("ddo", nargs=3, help="fitted DDO directories, smallest budget first")
    p.add_argument("--mixtures-out", default=None)
    args = p.parse_args()
    small, mid, large = (DDOResult.load(Path(d)) for d in args.ddo)
    truth = large.weights_vector()
    pred = autoscale_predict(small, mid, large.budget).weights_vector()
    rows = [
        (f"DDO optimum at {small.budget:g} (reused)", small.weights_vector()),
        (f"DDO optimum at {mid.budget:g} (reused)", mid.weights_vector()),
        (f"AutoScale from {small.budget:g}+{mid.budget:g}", pred),
        (f"DDO optimum at {large.budget:g} (direct)", truth),
        ("natural (= uniform here)", np.array(large.base_amounts) / np.sum(large.base_amounts)),
    ]
    print(f"| mixture for budget {large.budget:g} | " + " | ".join(large.domains) + " | L1 to direct optimum | DDO-model loss at " + f"{large.budget:g} |")
    print("|---|" + "---|" * len(large.domains) + "---|---|")
    for name, w in rows:
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in w) + f" | {np.abs(w - truth).sum():.3f} | {ddo_model_loss(large, w):.4f} |")
    if args.mixtures_out:
        labels = [f"ddo{small.budget:g}", f"ddo{mid.budget:g}", f"autoscale{small.budget:g}_{mid.budget:g}", f"ddo{large.budget:g}"]  # natural: --baselines
        with open(args.mixtures_out, "w") as f:
            for label, (_, w) in zip(labels, rows):
                f.write(f"--mixture {label}={{" + ",".join(f"{d}:{v:.6f}" for d, v in zip(large.domains, w)) + "}\n")


if __name__ == "__main__":
    main()
