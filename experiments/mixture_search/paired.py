"""Each validated mixture against the natural one, paired by seed (same seed = same model init and
data order), on the mean of the five per-skill losses of a split; plus the per-skill means.

    python experiments/mixture_search/paired.py logs/mixsearch/val_proposals > experiments/mixture_search/paired.md
    python experiments/mixture_search/paired.py logs/mixsearch/val_autoscale val > experiments/mixture_search/paired_autoscale.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import ttest_rel

SKILLS = ["add", "copy", "count", "reverse", "sort"]


def losses(root: Path, split: str) -> dict[str, dict[int, list[float]]]:
    out: dict[str, dict[int, list[float]]] = {}
    for summary in sorted(root.glob("runs/*-s*/summary.json")):
        name, seed = summary.parent.name.rsplit("-s", 1)
        m = json.loads(summary.read_text())["metrics"]
        out.setdefault(name, {})[int(seed)] = [m[f"{split}/loss/{k}"] for k in SKILLS]
    return out


def main() -> None:
    split = sys.argv[2] if len(sys.argv) > 2 else "test"
    runs = losses(Path(sys.argv[1]), split)
    natural = runs["natural"]
    order = sorted(runs, key=lambda n: np.mean([np.mean(v) for v in runs[n].values()]))
    print(f"| mixture | seeds | mean {split} loss | Δ vs natural (paired, mean ± sd) | paired t-test p | " + " | ".join(f"loss {k}" for k in SKILLS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(SKILLS))
    for name in order:
        seeds = sorted(set(runs[name]) & set(natural))
        mine = np.array([np.mean(runs[name][s]) for s in seeds])
        base = np.array([np.mean(natural[s]) for s in seeds])
        per_skill = np.mean([runs[name][s] for s in seeds], axis=0)
        if name == "natural":
            delta, p = "—", "—"
        else:
            d = mine - base
            delta, p = f"{d.mean():+.4f} ± {d.std(ddof=1):.4f}", f"{ttest_rel(mine, base).pvalue:.3f}"
        print(f"| {name} | {len(seeds)} | {mine.mean():.4f} | {delta} | {p} | " + " | ".join(f"{v:.2f}" for v in per_skill) + " |")


if __name__ == "__main__":
    main()
