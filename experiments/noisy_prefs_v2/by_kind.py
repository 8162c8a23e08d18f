"""Per pair kind: how the per-pair loss of flipped and clean training pairs compares (v2 grid).

    python by_kind.py <grid directory> <output directory> [method ...]

Joins each run's per-pair store with the kind of each training pair (regenerated from the embedded
corpus with the grid's data seed and pair kinds) and reports, per (method, flip rate, kind): the
share of flipped pairs, the mean loss of clean and flipped pairs over training, and the loss AUROC
for flipped pairs within the kind (pooled over steps and seeds; > 0.5: flipped pairs have the higher
loss, as the small-loss criterion behind Dr. DPO assumes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from assay.data.skills import generate_skills, graded_pairs
from assay.dynamics.mechanism import auroc
from assay.dynamics.store import read_store

KINDS = ["exact_vs_near", "exact_vs_far", "exact_vs_garbage"]
DOMAINS = ["copy", "reverse", "sort", "count", "add"]


def kinds_by_id(seed: int = 0) -> dict[str, str]:
    raw = generate_skills(DOMAINS, {"train": 1500, "val": 40, "test": 100}, [1, 2, 3], seed)
    return {r["id"]: r["pair_kind"] for r in graded_pairs(raw["train"], KINDS, seed)}


def main() -> None:
    grid, out = Path(sys.argv[1]), Path(sys.argv[2])
    methods = sys.argv[3:] or ["dpo", "dr_dpo_bp0.5", "beta_dpo"]
    kind = kinds_by_id()
    rows = []
    for method in methods:
        for p_dir in sorted(grid.glob("runs/seed=0/p=*")):
            p = p_dir.name.split("=")[1]
            if float(p) == 0:
                continue
            stores = [read_store(d / "dynamics") for d in sorted(grid.glob(f"runs/seed=*/p={p}/{method}")) if (d / "summary.json").exists()]
            if not stores:
                continue
            store = pd.concat(stores)
            store["kind"] = store["id"].map(kind)
            for k, g in store.groupby("kind"):
                flipped = g["is_flipped"].to_numpy(bool)
                rows.append({"method": method, "p": float(p), "kind": k, "runs": len(stores), "flip share": flipped.mean(),
                             "loss clean": g.loc[~flipped, "loss"].mean(), "loss flipped": g.loc[flipped, "loss"].mean(),
                             "loss AUROC (flipped high)": auroc(flipped, g["loss"].to_numpy(np.float64))})
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    head = list(table.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    text = "\n".join(lines)
    (out / "by_kind.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
