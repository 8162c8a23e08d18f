"""Does ``torch.compile`` pay for training SmolLM2-135M on this machine's CPU?

Each variant (eager, compiled with dynamic shapes) runs in its own process: a model of
SmolLM2-135M's architecture (random weights), 2 sequences a step, full fine-tuning with AdamW, and
a new sequence length at every step (as a training run's batches have). Reported: the first step
(which, compiled, includes the compilation) and the median of the later steps.

    .venv/bin/python benchmarks/compile/run.py --threads 2 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def one(args: argparse.Namespace) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                      vocab_size=49152, max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg)
    run = torch.compile(model, dynamic=True) if args.variant == "compiled" else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    for k in range(args.steps):
        length = args.length + (k * 37) % 61 - 30  # a new length every step
        ids = torch.randint(0, cfg.vocab_size, (2, length))
        start = time.perf_counter()
        logits = run(input_ids=ids, use_cache=False).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {"variant": args.variant, "threads": args.threads, "first_step_s": round(times[0], 2),
            "later_steps_median_s": round(statistics.median(times[1:]), 2), "steps": args.steps, "load1": os.getloadavg()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--length", type=int, default=400, help="mean tokens per sequence (each step varies it by up to 30)")
    p.add_argument("--variant", choices=("eager", "compiled"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(one(args)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for variant in ("eager", "compiled"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--threads", str(args.threads), "--steps", str(args.steps),
                              "--length", str(args.length)], env=env, capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
