"""The experiment's tables from its run directories: <runs>/<condition>/seed<k>/summary.json.

    python experiments/collaborative/table.py <runs> > experiments/collaborative/results.md
"""

import json
import sys
from pathlib import Path

import numpy as np

SKILLS = ("copy", "reverse", "sort", "add")
GLOBAL = [("test/exact_match", "EM"), *[(f"test/exact_match/{s}", f"EM {s}") for s in SKILLS], ("test/loss", "test loss")]
SELECTION = [("selection/is_corrupted/precision", "precision"), ("selection/is_corrupted/recall", "recall"), ("selection/is_corrupted/f1", "F1"),
             ("selection/is_corrupted/accuracy", "accuracy"), ("selection/is_corrupted/auroc", "AUROC")]


def cell(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "–"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main(root: Path) -> None:
    runs = {}
    for summary in sorted(root.glob("*/seed*/summary.json")):
        runs.setdefault(summary.parent.parent.name, []).append({**json.loads(summary.read_text()), "seed": summary.parent.name})
    failed = sorted(str(p.relative_to(root)) for p in root.glob("*/seed*") if p.is_dir() and not (p / "summary.json").is_file())
    print("Global held-out exact match (test split, all four skills) and loss; mean ± std over seeds (n).\n")
    print("| condition | n | " + " | ".join(h for _, h in GLOBAL) + " |")
    print("|---" * (len(GLOBAL) + 2) + "|")
    for cond, ss in runs.items():
        print(f"| {cond} | {len(ss)} | " + " | ".join(cell([s["metrics"].get(k) for s in ss]) for k, _ in GLOBAL) + " |")
    print("\nSelection quality against the ground-truth corruption flags (positive = clean, prediction = kept), mean over the four clients.\n")
    print("| condition | n | kept share | " + " | ".join(h for _, h in SELECTION) + " |")
    print("|---" * (len(SELECTION) + 3) + "|")
    for cond, ss in runs.items():
        if not ss[0]["collab"]["selects"]:
            continue
        kept = [np.mean([s["metrics"][f"collab/client{k}/kept_share"] for k in range(4)]) for s in ss]
        print(f"| {cond} | {len(ss)} | {cell(kept)} | " + " | ".join(cell([s["metrics"].get(k) for s in ss]) for k, _ in SELECTION) + " |")
    print("\nPer client (corruption 0 / 20 / 40 / 60 %): kept share and F1.\n")
    print("| condition | " + " | ".join(f"client {k} kept | client {k} F1" for k in range(4)) + " |")
    print("|---" * 9 + "|")
    for cond, ss in runs.items():
        if not ss[0]["collab"]["selects"]:
            continue
        cells = []
        for k in range(4):
            cells.append(cell([s["metrics"].get(f"collab/client{k}/kept_share") for s in ss]))
            cells.append(cell([s["metrics"].get(f"collab/client{k}/is_corrupted/f1") for s in ss]))
        print(f"| {cond} | " + " | ".join(cells) + " |")
    print("\nTest loss minus FedAvg on all data (b_fedavg_all) on the same seed: mean ± sample std, paired t-test.\n")
    print("| condition | pairs | Δ test loss | p |")
    print("|---|---|---|---|")
    from scipy.stats import ttest_rel

    base = {s["seed"]: s["metrics"]["test/loss"] for s in runs.get("b_fedavg_all", [])}
    for cond, ss in runs.items():
        pairs = [(s["metrics"]["test/loss"], base[s["seed"]]) for s in ss if s["seed"] in base]
        if cond == "b_fedavg_all" or len(pairs) < 2:
            continue
        d = np.array([a - b for a, b in pairs])
        print(f"| {cond} | {len(d)} | {d.mean():+.3f} ± {d.std(ddof=1):.3f} | {ttest_rel(*zip(*pairs)).pvalue:.3f} |")
    if failed:
        print(f"\nRuns without a summary (failed, killed or not run): {', '.join(failed)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
