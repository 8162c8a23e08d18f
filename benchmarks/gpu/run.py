"""GPU benchmarks in one call: DPO and SFT tokens/s and peak memory of assay vs TRL's DPOTrainer and
SFTTrainer (and a bare loop), per-sample gradient feature throughput, OT valuation of a million
points, and a 2-GPU DDP run.

    python benchmarks/gpu/run.py                    # on a GPU machine; about 6 minutes on one modern GPU
    python benchmarks/gpu/run.py --smoke            # everything shrunk (DPO and SFT: LoRA mode only), runs on a CPU (what the test runs)

Needs the bench extra for the TRL contender (``pip install -e '.[bench]'``); without TRL that
contender is skipped and the results say so. Writes ``<out>/results.json`` and ``<out>/results.md``
(default ``benchmarks/gpu/results/``), plus the raw DPO and SFT rows in ``<out>/dpo.jsonl`` and
``<out>/sft.jsonl``.

Sections (each in its own process, so one failing or running out of memory does not stop the rest):

- ``dpo``: ``benchmarks/dpo_throughput/run.py --arm realistic --init config --size 360m --device cuda``:
  a 362M-parameter Llama (SmolLM2-360M's architecture: hidden 960, 32 layers, 15 heads / 5 KV heads,
  vocabulary 49,152) built from its config with random weights (no download), on UltraFeedback-like
  pairs (prompts about 100-300 tokens, responses about 50-200), LoRA and full fine-tuning, bf16
  autocast, batch 8 pairs, 30 steps (5 untimed). Tokens/s counts the tokens of the two sequences
  prompt+chosen and prompt+rejected of every pair (the same work for every contender, whatever its
  layout); peak memory is ``torch.cuda.max_memory_allocated`` of the contender's process.
- ``sft``: the same script and model with ``--objective sft``: each pair's prompt + chosen reply as
  an SFT example (loss on the reply's tokens), assay vs TRL's SFTTrainer (prompt-completion data,
  ``completion_only_loss``, no packing, not padding-free) vs a bare loop, batch 8 examples, 30 steps
  (5 untimed). Tokens/s counts the real (non-pad) tokens of prompt + completion, the same for every
  contender.
- ``grad_features``: the per-sample gradient features ``dynamics=gradients`` records (batched
  backward with module taps, then the sparse JL projection to k = 8192) over the last decoder layer
  of the same model, 512-token rows: examples per second and peak memory.
- ``ot``: ``assay.ot.ot_values`` (GOT-D / LAVA's valuation, the default subsample +
  c-transform path) of 1,000,000 synthetic 384-d embeddings against 5,000 target points, on CUDA
  (see ``benchmarks/ot_scale`` for the CPU measurements and the method).
- ``ddp``: with two or more GPUs, ``assay-train trainer=ddp trainer.devices=2`` (DPO, per-sample
  dynamics on, 300 steps of the default model) end to end; skipped, and said so, otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SECTIONS = ("dpo", "sft", "grad_features", "ot", "ddp")


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def peak_gpu_mib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---- sections run in a child process ------------------------------------------------------------------
def grad_features(args: argparse.Namespace) -> dict:
    """Examples/s of per-sample gradient features over the last decoder layer, as dynamics=gradients computes them."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from assay.models.grads import grad_param_names, per_sample_grads
    from assay.models.projection import project

    sizes = load(REPO / "benchmarks" / "dpo_throughput" / "run.py", "dpo_throughput").LLAMA_SIZES
    dev = device()
    torch.manual_seed(0)
    config = sizes[args.size]
    model = LlamaForCausalLM(LlamaConfig(**config)).to(dev)
    names = grad_param_names(model)  # the default: the last decoder layer
    width = sum(p.numel() for n, p in model.named_parameters() if n in names)
    rows, length, k = (4, 32, 64) if args.smoke else (16, 512, 8192)
    ids = torch.randint(1, config["vocab_size"], (rows, length), device=dev)
    labels = ids.clone()
    labels[:, : length // 2] = -100  # the prompt half carries no loss, as in SFT batches
    out = torch.empty(rows, width, device=dev)
    timings = []
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
        for i in range(args.repeats + 1):
            sync()
            start = time.perf_counter()
            g = per_sample_grads(model.eval(), ids, labels, names, out=out)
            feats = project(g, k, seed=0, kind="sjlt")
            sync()
            if i:  # the first call compiles kernels and warms the allocator
                timings.append(time.perf_counter() - start)
    seconds = sorted(timings)[len(timings) // 2]
    return {"parameters_tapped": width, "rows": rows, "tokens_per_row": length, "proj_dim": k, "feature_shape": list(feats.shape),
            "median_seconds_per_batch": round(seconds, 4), "examples_per_s": round(rows / seconds, 1), "peak_gpu_mib": peak_gpu_mib(),
            "model_parameters": sum(p.numel() for p in model.parameters())}


def ot(args: argparse.Namespace) -> dict:
    import torch

    from assay.ot import SolverOptions, ot_values

    embeddings = load(REPO / "benchmarks" / "ot_scale" / "run.py", "ot_scale").embeddings
    n, m, dim = (2000, 200, 32) if args.smoke else (1_000_000, 5000, 384)
    x, y = embeddings(n, m, dim)
    sync()
    start = time.perf_counter()
    r = ot_values(x, y, SolverOptions(fit_size=min(20_000, n // 2), seed=0, progress=False))
    sync()
    return {"pool": n, "target": m, "dim": dim, "device": str(torch.device(device())), "solver": r.solver, "fit_size": r.fit_size, "sweeps": r.sweeps,
            "seconds": round(time.perf_counter() - start, 2), "timings": r.timings, "peak_gpu_mib": peak_gpu_mib(),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2), "finite_values": bool(torch.isfinite(torch.as_tensor(r.values)).all())}


def ddp(args: argparse.Namespace, out: Path) -> dict:
    import torch

    gpus = torch.cuda.device_count()
    if args.smoke or gpus < 2:
        return {"skipped": f"{gpus} GPU(s) on this machine; the DDP run needs 2" if not args.smoke else "smoke mode"}
    run_dir = out / "ddp_run"
    cmd = [sys.executable, "-m", "assay.train", "trainer=ddp", "trainer.devices=2", "objective=dpo", "data.format=preference", "dynamics=losses",
           "logger=csv", "trainer.max_steps=300", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=args.section_timeout)
    summary = run_dir / "summary.json"
    return {"command": " ".join(cmd[1:]), "exit_code": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
            "summary": json.loads(summary.read_text())["metrics"] if summary.is_file() else None,
            "stderr_tail": proc.stderr[-1500:] if proc.returncode else ""}


def throughput(args: argparse.Namespace, out: Path, objective: str) -> dict:
    """The realistic arm of ``benchmarks/dpo_throughput/run.py`` for ``objective`` (dpo or sft)."""
    rows_file = out / f"{objective}.jsonl"
    rows_file.unlink(missing_ok=True)
    contenders = ["assay", "trl", "bare"] if importlib.util.find_spec("trl") else ["assay", "bare"]
    steps, warmup, batch = (3, 1, 2) if args.smoke else (30, 5, 8)
    cmd = [sys.executable, str(REPO / "benchmarks" / "dpo_throughput" / "run.py"), "--objective", objective, "--arm", "realistic", "--init", "config", "--size", args.size,
           "--device", device(), "--modes", *(["lora"] if args.smoke else ["lora", "full"]), "--contenders", *contenders, "--repeats", "1", "--steps", str(steps),
           "--warmup", str(warmup), "--batch-size", str(batch), "--threads", str(min(8, os.cpu_count() or 1)), "--results", str(rows_file)]
    if args.smoke:  # not a measurement: no wait for the load to settle, and its rows are written whatever the load
        cmd += ["--settle", "0", "--force"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.section_timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"dpo_throughput --objective {objective} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    table = []
    for r in rows:
        if objective == "sft":  # the real tokens of prompt + completion, counted by the script itself
            rate, tokens = {"samples_per_s": r["samples_per_s"]}, r["tokens_per_s"]
        else:  # the two sequences prompt+chosen and prompt+rejected of every pair, whatever the contender's layout
            rate, tokens = {"pairs_per_s": r["pairs_per_s"]}, r["data"]["pair_tokens"] * r["batch_size"] * r["timed_steps"] / r["seconds"]
        table.append({"mode": r["mode"], "contender": r["contender"], **rate, "tokens_per_s": round(tokens, 1),
                      "step_ms": r["step_ms"], "peak_gpu_mib": r.get("peak_gpu_mib"), "peak_rss_mib": r["peak_rss_mib"]})
    ratios = {}
    for mode in sorted({t["mode"] for t in table}):
        by = {t["contender"]: t for t in table if t["mode"] == mode}
        if "assay" in by and "trl" in by:
            a, t = by["assay"], by["trl"]
            memory = "peak_gpu_mib" if a["peak_gpu_mib"] and t["peak_gpu_mib"] else "peak_rss_mib"  # RSS where there is no GPU (smoke)
            ratios[mode] = {"tokens_per_s_assay_over_trl": round(a["tokens_per_s"] / t["tokens_per_s"], 3),
                            "peak_memory_assay_over_trl": round(a[memory] / t[memory], 3), "memory_measure": memory}
    return {"command": " ".join(Path(c).name if c == sys.executable else c for c in cmd), "contenders": contenders,
            "data": rows[0]["data"] if rows else None, "rows": table, "ratios": ratios,
            "trl": "not installed (pip install -e '.[bench]')" if "trl" not in contenders else rows[0].get("trl_version") or next((r.get("trl_version") for r in rows if r.get("trl_version")), None)}


# ---- driver --------------------------------------------------------------------------------------------
def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []}
    for pkg in ("transformers", "pytorch_lightning", "trl", "peft"):
        try:
            info[pkg] = __import__(pkg).__version__
        except ImportError:
            info[pkg] = None
    return info


def run_section(args: argparse.Namespace, name: str, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--one", name, "--out", str(out), "--size", args.size, "--repeats", str(args.repeats),
           "--section-timeout", str(args.section_timeout), *(["--smoke"] if args.smoke else [])]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.section_timeout + 60)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.section_timeout + 60} s", "wall_s": round(time.perf_counter() - start, 1)}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['no output'])[-1][:500]}", "wall_s": round(time.perf_counter() - start, 1)}
    return {**json.loads(lines[-1][len("RESULT "):]), "wall_s": round(time.perf_counter() - start, 1)}


def throughput_lines(d: dict, title: str, unit: str) -> list[str]:
    """The markdown of a DPO (``unit`` pairs) or SFT (samples) throughput section."""
    lines = [title, ""]
    if not d:
        return lines + ["not run", ""]
    if "error" in d:
        return lines + [f"failed: {d['error']}", ""]
    data = d["data"]
    if unit == "pairs":
        what = (f"{data['pairs']} pairs, prompt tokens min/mean/max {data['prompt_tokens']}, response tokens {data['response_tokens']}, "
                f"{data['pair_tokens']} tokens per pair (prompt+chosen, prompt+rejected)")
    else:
        what = (f"{data['examples']} examples (prompt + chosen reply), prompt tokens min/mean/max {data['prompt_tokens']}, completion tokens "
                f"{data['completion_tokens']}; tokens/s counts the real (non-pad) tokens")
    lines += [f"{data['params']:,}-parameter Llama built from a config; {what}. TRL: {d['trl']}.", "",
              f"| mode | contender | {unit}/s | tokens/s | ms/step | peak GPU MiB | peak RSS MiB |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['mode']} | {r['contender']} | {r[unit + '_per_s']} | {r['tokens_per_s']} | {r['step_ms']} | {r['peak_gpu_mib']} | {r['peak_rss_mib']} |" for r in d["rows"]]
    return lines + [""] + [f"- {mode}: assay/TRL tokens/s {v['tokens_per_s_assay_over_trl']}x, peak memory ({v['memory_measure']}) {v['peak_memory_assay_over_trl']}x"
                           for mode, v in d["ratios"].items()] + [""]


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# GPU benchmark results ({'smoke mode, not a measurement' if results['smoke'] else 'measurement'})", "",
             f"- when: {results['started']} to {results['finished']} ({results['wall_s']} s)",
             f"- machine: {', '.join(m['gpus']) or 'no GPU'}; {m['cpus']} CPUs; torch {m['torch']} (CUDA {m['cuda']}), transformers {m['transformers']}, "
             f"pytorch_lightning {m['pytorch_lightning']}, trl {m['trl']}, peft {m['peft']}",
             f"- command: `{results['command']}`", ""]
    lines += throughput_lines(results["sections"].get("dpo", {}), "## DPO: assay vs TRL DPOTrainer vs a bare loop", "pairs")
    lines += throughput_lines(results["sections"].get("sft", {}), "## SFT: assay vs TRL SFTTrainer vs a bare loop", "samples")
    for name, title in (("grad_features", "Per-sample gradient features"), ("ot", "OT valuation"), ("ddp", "2-GPU DDP run")):
        lines += [f"## {title}", "", "```", json.dumps(results["sections"].get(name), indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="shrink everything (tiny model, few steps, 2k OT points) so it runs on a CPU")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for results.json, results.md and dpo.jsonl")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--size", default=None, help="Llama architecture of the DPO and gradient sections (360m; smoke in --smoke)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of the gradient-feature batch")
    p.add_argument("--section-timeout", type=int, default=300, help="seconds before a section is given up")
    p.add_argument("--one", choices=SECTIONS, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.size = args.size or ("smoke" if args.smoke else "360m")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.one:
        fn = {"dpo": lambda: throughput(args, out, "dpo"), "sft": lambda: throughput(args, out, "sft"), "grad_features": lambda: grad_features(args), "ot": lambda: ot(args), "ddp": lambda: ddp(args, out)}[args.one]
        print("RESULT " + json.dumps(fn()), flush=True)
        return
    if device() == "cpu" and not args.smoke:
        raise SystemExit("no CUDA GPU here: this benchmark measures GPUs (use --smoke to check the script on a CPU)")
    started, wall = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    results = {"smoke": args.smoke, "started": started, "machine": machine(), "command": " ".join(["python", "benchmarks/gpu/run.py", *sys.argv[1:]]), "sections": {}}
    for name in args.sections:
        print(f"[gpu benchmark] {name} ...", flush=True)
        results["sections"][name] = run_section(args, name, out)
        print(f"[gpu benchmark] {name}: {json.dumps(results['sections'][name])[:400]}", flush=True)
    results.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_s=round(time.perf_counter() - wall, 1))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({results['wall_s']} s)")


if __name__ == "__main__":
    main()
