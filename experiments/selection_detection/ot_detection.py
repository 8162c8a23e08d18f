"""Detection of corrupted training examples by the OT valuations (LAVA, GOT-D) on the skills corpus.

    python experiments/selection_detection/ot_detection.py --p 0.2 0.4 --seeds 0 --max-train 2000

For each corruption rate p (noise=corrupt noise.p=p: a share p of completions replaced by shuffled,
truncated or another example's answer) the training pool is valued against the clean validation
split, and each method's OT value (higher = more harmful) is scored against the ground truth
``is_corrupted``: AUROC, and precision among the top p·N values (the share of flagged examples that are
truly corrupted when as many are flagged as there are corrupted ones). No training is involved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--p", type=float, nargs="+", default=[0.2, 0.4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--embedder", default="minilm")
    p.add_argument("--max-train", type=int, default=None, help="data.max_train_examples (default: the whole pool)")
    p.add_argument("--out", default=str(Path(__file__).parent / "ot_detection.jsonl"))
    args = p.parse_args()

    import datasets
    from sklearn.metrics import roc_auc_score

    from assay.config import validate
    from assay.data import build_examples
    from assay.selection import SelectionContext
    from assay.selection.gotd import GotD
    from assay.selection.lava import Lava
    from tests.conftest import compose_config

    methods = {
        "lava (class = source)": lambda seed: Lava(embedder=args.embedder, seed=seed),
        "lava (class = source, uniform target weights)": lambda seed: Lava(embedder=args.embedder, balance_classes=False, seed=seed),
        "lava (features only)": lambda seed: Lava(embedder=args.embedder, label_column=None, seed=seed),
        "gotd (batched sinkhorn)": lambda seed: GotD(embedder=args.embedder, seed=seed),
    }
    cache = Path(os.environ.get("ASSAY_CACHE", Path.home() / ".cache" / "assay"))
    with open(args.out, "a") as log:
        for seed in args.seeds:
            for rate in args.p:
                spec = validate(compose_config(["noise=corrupt", f"noise.p={rate}", f"seed={seed}", f"data.max_train_examples={args.max_train or 'null'}"]))
                ex = build_examples(spec.data, spec.mixture, spec.noise)
                ctx = SelectionContext(ex.splits["train"], datasets.DatasetDict(ex.splits), cache_dir=cache)
                truth = np.asarray(ctx.train["is_corrupted"], dtype=bool)
                for label, make in methods.items():
                    started = time.time()
                    value = -np.asarray(make(seed).score(ctx))  # back to "higher = more harmful"
                    k = int(truth.sum())
                    top = np.argsort(-value, kind="stable")[:k]
                    row = {
                        "method": label, "embedder": args.embedder, "p": rate, "seed": seed, "pool": len(truth), "target": len(ex.splits["val"]),
                        "auroc": round(float(roc_auc_score(truth, value)), 4), "precision_at_p": round(float(truth[top].mean()), 4),
                        "seconds": round(time.time() - started, 1),
                    }
                    print(json.dumps(row), flush=True)
                    log.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
