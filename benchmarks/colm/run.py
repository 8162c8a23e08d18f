"""CoLM's memory and time against training on the large batch, side by side in one process.

    .venv/bin/python benchmarks/colm/run.py --smoke                          # seconds, CPU: the script works
    .venv/bin/python benchmarks/colm/run.py --size smollm2 --lora-r 16 -b 16 -r 4 --seq 512   # a GPU

Three arms train the same Llama-style model (random weights from a config: ``tiny`` is assay's
``tiny_llama`` shape, ``smollm2`` SmolLM2-135M's) from the same initial weights with AdamW, on the same
synthetic SFT batches (random tokens, the loss on the second half of each sequence, every example
tagged with one of 8 sources of shares 50/20/10/8/5/4/2/1 %):

- ``batch_b``: each step trains b examples (the first b of the step's draw);
- ``coreset_b_of_rb``: each step draws r·b examples and trains on CoLM's coreset of b
  (``assay.batch_selection.coreset_selector.CoresetSelector.positions`` with its defaults: one ZO direction,
  Adam-normalised with the arm's own optimizer moments, top-512 coordinates per source, facility
  location, small sources kept whole); its step time includes the selection;
- ``full_rb``: each step trains all r·b examples.

The arms run interleaved step by step (arm order rotated every step), so a change in the machine's
load hits all three alike. Step time: the median wall time of the steps after ``--warmup``
(``torch.cuda.synchronize`` around each step on a GPU). Memory:

- on a GPU, ``torch.cuda.max_memory_allocated`` over the step (selection, forward, backward,
  optimizer step), reset before each step; reported as the peak and as the peak above what was
  allocated before the step (weights, optimizer state, the batch);
- on the CPU (no allocator statistics worth the name), a proxy: the bytes of the distinct tensor
  storages autograd saves for the backward pass during the training forward
  (``torch.autograd.graph.saved_tensors_hooks``), i.e. the activation memory a backward of b or r·b
  examples holds. CoLM's selection runs without a graph and saves nothing; its transient no-grad
  forward of r·b examples is not in this proxy (it is in the GPU number).

The arms' step times include everything after the batch is drawn; ``select_s`` is the coreset arm's share
spent choosing (one no-grad forward of r·b, two passes of the last block and head, the greedy).

Each row is one arm; ratios are to ``full_rb``. One JSON line per arm is appended to
``benchmarks/colm/results.jsonl`` (``--out``), with the command, device and settings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHARES = [0.50, 0.20, 0.10, 0.08, 0.05, 0.04, 0.02, 0.01]
SIZES = {  # LlamaConfig fields
    "smoke": dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2),
    "tiny": dict(vocab_size=512, hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4),
    "smollm2": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, tie_word_embeddings=True),
}


def build_model(size: str, lora_r: int, device: torch.device, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**SIZES[size])).to(device)
    if lora_r:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    return model


def draw(n: int, seq: int, vocab: int, gen: torch.Generator, device: torch.device) -> dict:
    """n synthetic SFT examples: tokens, labels on the second half, a source per example by SHARES."""
    ids = torch.randint(3, vocab, (n, seq), generator=gen)
    labels = ids.clone()
    labels[:, : seq // 2] = -100
    picks = torch.multinomial(torch.tensor(SHARES), n, replacement=True, generator=gen).tolist()
    return {"input_ids": ids.to(device), "labels": labels.to(device), "sources": [f"s{k}" for k in picks]}


def per_sample_loss(model, batch: dict) -> torch.Tensor:
    """Token-mean cross-entropy over each example's labelled tokens (assay's SFT loss)."""
    logits = model(input_ids=batch["input_ids"]).logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    tok = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp_min(0), reduction="none")
    mask = (target != -100).float()
    return (tok * mask).sum(1) / mask.sum(1).clamp_min(1)


def take(batch: dict, rows: list[int]) -> dict:
    index = torch.tensor(rows, device=batch["input_ids"].device)
    return {"input_ids": batch["input_ids"][index], "labels": batch["labels"][index], "sources": [batch["sources"][i] for i in rows]}


class SavedBytes:
    """Bytes of the distinct storages autograd saves for backward while active (the CPU memory proxy)."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor):
        s = t.untyped_storage()
        self.storages[s.data_ptr()] = s.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def train_step(arm: str, model, opt, batch: dict, b: int, selector, step: int, cuda: bool) -> dict:
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    started = time.perf_counter()
    select_s = 0.0
    if arm == "batch_b":
        batch = take(batch, list(range(b)))
    elif arm == "coreset_b_of_rb":
        t0 = time.perf_counter()
        with torch.no_grad():
            rows = selector.positions(model, batch, lambda x: per_sample_loss(model, x), opt, step)
        batch = take(batch, rows)
        select_s = time.perf_counter() - t0
    saved = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        loss = per_sample_loss(model, batch).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    out = {"step_s": time.perf_counter() - started, "select_s": select_s, "saved_bytes": saved.total, "trained": len(batch["sources"]),
           "small_sources_trained": sum(s in ("s6", "s7") for s in batch["sources"])}
    if cuda:
        out.update(peak_bytes=torch.cuda.max_memory_allocated(), peak_above_start_bytes=torch.cuda.max_memory_allocated() - before)
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("-b", "--batch", type=int, default=16, help="b: the examples trained per step by batch_b and the coreset")
    p.add_argument("-r", "--ratio", type=int, default=4, help="r: the coreset arm draws r·b, full_rb trains r·b")
    p.add_argument("--seq", type=int, default=128, help="tokens per example")
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank on q,k,v,o (0: full fine-tuning)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "results.jsonl")
    p.add_argument("--smoke", action="store_true", help="seconds on a CPU: the smoke model, b=4, r=2, 32 tokens, 3 steps (not a measurement)")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.batch, args.ratio, args.seq, args.steps, args.warmup = "smoke", 4, 2, 32, 3, 1
    from assay.batch_selection.colm import CoLM
    from assay.batch_selection.coreset_selector import CoresetSelector

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    arms = ["batch_b", "coreset_b_of_rb", "full_rb"]
    models = {a: build_model(args.size, args.lora_r, device) for a in arms}
    opts = {a: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-4) for a, m in models.items()}
    selector = CoresetSelector(CoLM(ratio=args.ratio), args.batch, seed=0)
    gen = torch.Generator().manual_seed(0)
    rows: dict[str, list[dict]] = {a: [] for a in arms}
    for step in range(args.steps):
        batch = draw(args.ratio * args.batch, args.seq, SIZES[args.size]["vocab_size"], gen, device)
        for a in arms[step % 3:] + arms[: step % 3]:
            rows[a].append(train_step(a, models[a], opts[a], batch, args.batch, selector, step, cuda))
    results = []
    for a in arms:
        timed = rows[a][args.warmup:] or rows[a]
        r = {"arm": a, "step_s": statistics.median(x["step_s"] for x in timed), "select_s": statistics.median(x["select_s"] for x in timed),
             "saved_mib": max(x["saved_bytes"] for x in timed) / 2**20, "trained": timed[0]["trained"],
             "small_sources_trained": sum(x["small_sources_trained"] for x in rows[a])}
        if cuda:
            r.update(peak_mib=max(x["peak_bytes"] for x in timed) / 2**20, peak_above_start_mib=max(x["peak_above_start_bytes"] for x in timed) / 2**20)
        results.append(r)
    full = results[-1]
    for r in results:
        r.update(time_vs_full=r["step_s"] / full["step_s"], saved_vs_full=r["saved_mib"] / max(full["saved_mib"], 1e-12))
        if cuda:
            r.update(peak_vs_full=r["peak_mib"] / full["peak_mib"], peak_above_start_vs_full=r["peak_above_start_mib"] / full["peak_above_start_mib"])
    meta = {"command": " ".join(sys.argv), "device": torch.cuda.get_device_name() if cuda else f"cpu ({args.threads} threads)",
            "size": args.size, "b": args.batch, "r": args.ratio, "seq": args.seq, "lora_r": args.lora_r, "steps": args.steps,
            "warmup": args.warmup, "smoke": args.smoke, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    mem = "peak MiB (x full) | above start MiB (x full)" if cuda else "saved-for-backward MiB (x full)"
    print(f"{meta['device']}: {args.size}, b={args.batch}, r={args.ratio}, {args.seq} tokens, LoRA r={args.lora_r}, {args.steps} steps")
    print(f"| arm | trained/step | step s (x full) | selection s | {mem} | small-source examples trained |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        m = (f"{r['peak_mib']:.0f} ({r['peak_vs_full']:.2f}) | {r['peak_above_start_mib']:.0f} ({r['peak_above_start_vs_full']:.2f})" if cuda
             else f"{r['saved_mib']:.2f} ({r['saved_vs_full']:.2f})")
        print(f"| {r['arm']} | {r['trained']} | {r['step_s']:.4f} ({r['time_vs_full']:.2f}) | {r['select_s']:.4f} | {m} | {r['small_sources_trained']} |")
    if not args.smoke:
        with open(args.out, "a") as f:
            for r in results:
                f.write(json.dumps({**meta, **r}) + "\n")
    return results


if __name__ == "__main__":
    main()
