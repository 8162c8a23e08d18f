"""Cluster-LESS vs LESS scoring, side by side in one run: wall time of each (the same tiny Llama, pool and
target), their ratio, and how much of LESS's top 20% cluster-LESS keeps (overlap and Spearman of the scores).

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/cluster_less/run.py --pool 512 --target 32

Random-token pools on random weights: a speed comparison; the overlap only says how far one
representative gradient per few examples is from each example's own on such data.
"""

from __future__ import annotations

import argparse
import json
import time

import datasets
import numpy as np
import torch
from scipy.stats import spearmanr
from transformers import LlamaConfig, LlamaForCausalLM

from assay.selection import SelectionContext
from assay.selection.scorers.cluster_less import ClusterLESS
from assay.selection.scorers.gradient_scores import LESS


class Tok:
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2


def rows(n: int, rng: np.random.Generator, prefix: str) -> datasets.Dataset:
    # four "topics": each draws its tokens from its own quarter of the vocabulary, so clusters exist
    topic = rng.integers(0, 4, n)
    prompts = [[1] + (3 + 16 * t + rng.integers(0, 16, 6)).tolist() for t in topic]
    completions = [(3 + 16 * t + rng.integers(0, 16, 4)).tolist() + [2] for t in topic]
    return datasets.Dataset.from_dict({"id": [f"{prefix}{i}" for i in range(n)], "source": [f"t{t}" for t in topic], "prompt": ["p"] * n,
                                       "completion": ["c"] * n, "prompt_ids": prompts, "completion_ids": completions})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=int, default=512)
    ap.add_argument("--target", type=int, default=32)
    ap.add_argument("--proj-dim", type=int, default=512)
    ap.add_argument("--cluster-size", type=int, default=64)
    ap.add_argument("--samples-per-cluster", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=72, hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers, num_attention_heads=4,
                                         num_key_value_heads=4, max_position_embeddings=64))
    rng = np.random.default_rng(0)
    train, target = rows(args.pool, rng, "p"), rows(args.target, rng, "t")
    ctx = SelectionContext(train, splits=datasets.DatasetDict({"train": train, "val": target}), model=model, tokenizer=Tok)
    out = {"pool": args.pool, "target": args.target, "proj_dim": args.proj_dim, "hidden": args.hidden, "layers": args.layers}
    scores = {}
    for name, scorer in (("less", LESS(proj_dim=args.proj_dim, allow_untrained=True, seed=0)),
                         ("cluster_less", ClusterLESS(proj_dim=args.proj_dim, cluster_size=args.cluster_size,
                                                      samples_per_cluster=args.samples_per_cluster, allow_untrained=True, seed=0))):
        t0 = time.perf_counter()
        scores[name] = scorer.score(ctx)
        out[f"{name}_s"] = round(time.perf_counter() - t0, 3)
    k = args.pool // 5
    top = {n: set(np.argsort(-s, kind="stable")[:k].tolist()) for n, s in scores.items()}
    out["speedup"] = round(out["less_s"] / out["cluster_less_s"], 2)
    out["top20_overlap"] = round(len(top["less"] & top["cluster_less"]) / k, 3)
    out["spearman"] = round(float(spearmanr(scores["less"], scores["cluster_less"]).statistic), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
