"""DPO training throughput on CPU: assay vs TRL's DPOTrainer vs a bare PyTorch loop.

    /work/main/.venv/bin/python benchmarks/dpo_throughput/run.py [--steps N --batch-size B --threads T]

All three contenders train the same tiny Llama-style model (the ``tiny_llama`` defaults: hidden 128,
4 layers, 4 heads, vocabulary trained on the skills corpus) from the same initial weights, on the
same preference pairs (skills, ``data.format=preference``), with the same β, learning rate (constant,
no warm-up), batch size, gradient clipping and number of optimizer steps, reference log-probs
precomputed before training:

- ``assay``: ``AssayModule`` + ``AssayDataModule`` under a Lightning ``Trainer``, built as
  ``assay.train.run_stage`` builds them (``objective=dpo``, per-sample dynamics on: the
  ``PerSampleRecorder`` writes every pair of every step to a store), without validation,
  checkpoints, logger or progress bar. With the objective's defaults each pair is one shared-prompt
  sequence, packed into rows (``objective.share_prompt``, ``objective.pack_factor``);
  ``--assay-overrides objective.share_prompt=false`` scores two sequences per pair instead.
- ``trl``: ``trl.DPOTrainer`` with ``precompute_ref_log_probs=True`` (it runs its reference pass in
  its constructor, before timing, and keeps no reference model), no evaluation, ``report_to="none"``,
  no saving, gradient checkpointing and bf16 off (the model is float32 on CPU, like the others).
- ``bare``: a plain loop doing the same math (one forward over the [chosen; rejected] stack, summed
  response log-probs, sigmoid DPO loss, AdamW step): the ceiling.

The data and the initial model are prepared once (in their own process); each contender then runs in
its own process, one after the other, so the peak resident memory (``ru_maxrss``) it reports is its
own. Throughput counts the optimizer steps after ``--warmup`` steps: wall time from the end of step
``warmup`` to the end of the last step (data loading, forward, backward, optimizer, and each
framework's per-step bookkeeping included; setup and teardown excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTENDERS = ("assay", "trl", "bare")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def assay_overrides(args: argparse.Namespace, out_dir: Path) -> list[str]:
    """The run as ``assay-train`` would compose it; only what the benchmark fixes differs from the defaults."""
    return [
        "objective=dpo",
        "data.format=preference",
        f"data.max_train_examples={args.pairs}",
        f"data.batch_size={args.batch_size}",
        f"objective.beta={args.beta}",
        f"optim.lr={args.lr}",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
        "dynamics=losses",
        "logger=none",
        f"trainer.max_steps={args.steps}",
        "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={out_dir}",
        f"paths.cache_dir={out_dir / 'cache'}",
        f"seed={args.seed}",
        *args.assay_overrides,
    ]


def compose(args: argparse.Namespace, out_dir: Path):
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from assay.config import validate
    from assay.paths import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=assay_overrides(args, out_dir), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
    return cfg, validate(cfg)


# ---- preparation: data, tokenizer, initial weights and reference log-probs, shared by all ------------
def prepare(args: argparse.Namespace, work: Path) -> dict:
    import pytorch_lightning as pl
    from datasets import DatasetDict

    from assay.data import build_examples
    from assay.data.collate import tokenize_split
    from assay.objectives.reference import attach_reference_logps

    import torch

    torch.set_num_threads(args.threads)
    cfg, spec = compose(args, work / "prepare")
    pl.seed_everything(cfg.seed, verbose=False)
    examples = build_examples(spec.data, spec.mixture, spec.noise)
    model, tokenizer = spec.model.build(examples.splits)
    data = spec.data
    train = tokenize_split(examples.splits["train"], tokenizer, data.format, data.separator, data.max_length)
    train = train.add_column("_row", list(range(len(train))))
    splits, _ = attach_reference_logps(
        model, DatasetDict(train=train), tokenizer.pad_token_id, data.eval_batch_size, work / "reference", spec.objective.collation
    )
    splits["train"].save_to_disk(str(work / "train"))
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "tokenizer")
    lengths = [len(p) + max(len(c), len(r)) for p, c, r in zip(train["prompt_ids"], train["chosen_ids"], train["rejected_ids"])]
    return {
        "pairs": len(train),
        "vocab": len(tokenizer),
        "params": sum(p.numel() for p in model.parameters()),
        "max_tokens": max(lengths),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
    }


def load_shared(work: Path):
    from datasets import load_from_disk
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
    model = LlamaForCausalLM.from_pretrained(work / "model")
    return model, tokenizer, load_from_disk(str(work / "train"))


def stamp() -> tuple[float, float]:
    """(wall clock, CPU time of this process): on a shared machine the second is what the work cost."""
    return time.perf_counter(), time.process_time()


def throughput(ends: list[tuple[float, float]], args: argparse.Namespace) -> dict:
    """Pairs per second over the steps after the warm-up; ``ends[i]`` stamps the end of optimizer step i+1.

    ``pairs_per_s`` divides by wall time; ``pairs_per_cpu_s`` by the process's CPU time over the same
    span, which other load on the machine inflates far less (with one thread they agree on an idle machine).
    """
    assert len(ends) == args.steps, f"expected {args.steps} step timestamps, got {len(ends)}"
    timed, pairs = args.steps - args.warmup, (args.steps - args.warmup) * args.batch_size
    seconds = ends[-1][0] - ends[args.warmup - 1][0]
    cpu_seconds = ends[-1][1] - ends[args.warmup - 1][1]
    return {"timed_steps": timed, "seconds": round(seconds, 3), "step_ms": round(1000 * seconds / timed, 2),
            "pairs_per_s": round(pairs / seconds, 1), "cpu_seconds": round(cpu_seconds, 3), "pairs_per_cpu_s": round(pairs / cpu_seconds, 1)}


# ---- (a) assay --------------------------------------------------------------------------------------
def run_assay(args: argparse.Namespace, work: Path) -> dict:
    import pytorch_lightning as pl
    from datasets import DatasetDict

    from assay.data.datamodule import AssayDataModule, SamplerProgress
    from assay.dynamics.store import read_store
    from assay.module import AssayModule
    from assay.selection import SelectionContext

    run_dir = work / "assay_run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh dynamics store on every run
    cfg, spec = compose(args, run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model, tokenizer, train = load_shared(work)
    tokenized = DatasetDict(train=train)
    selection = spec.selection.select(SelectionContext(tokenized["train"], tokenized, model, tokenizer, run_dir, run_dir / "cache"))
    data = spec.data
    datamodule = AssayDataModule(
        tokenized, selection.kept_rows, spec.ordering.keys(tokenized["train"], selection.scores), spec.ordering, data.format,
        data.batch_size, data.eval_batch_size, tokenizer.pad_token_id, collation=spec.objective.collation,
    )
    module = AssayModule(model, tokenizer, spec.objective, spec.optim, spec.eval)

    ends: list[tuple[float, float]] = []

    class StepEnds(pl.Callback):
        # Last in the list, so the dynamics recorder's work for the step falls inside the timed span.
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            ends.append(stamp())

    callbacks = [SamplerProgress(), *spec.dynamics.callbacks(run_dir), StepEnds()]
    trainer = spec.trainer.build(callbacks=callbacks, logger=False, enable_checkpointing=False, default_root_dir=str(run_dir))
    trainer.fit(module, datamodule=datamodule)
    peak = peak_rss_mib()  # training's peak, before the check below reads the store back
    records = len(read_store(run_dir / "dynamics"))
    assert records == args.steps * args.batch_size, f"dynamics store holds {records} records, expected {args.steps * args.batch_size}"
    return {**throughput(ends, args), "dynamics_records": records, "peak_rss_mib": peak}


# ---- (b) TRL ----------------------------------------------------------------------------------------
def run_trl(args: argparse.Namespace, work: Path) -> dict:
    import torch
    import trl
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(args.seed)
    model, tokenizer, train = load_shared(work)
    # TRL tokenizes text itself; assay joins prompt and response with data.separator (" "), so the
    # responses carry it in front. The token ids are compared with assay's below.
    text = train.select_columns(["prompt", "chosen", "rejected"])
    text = text.map(lambda r: {"chosen": " " + r["chosen"], "rejected": " " + r["rejected"]})
    config = DPOConfig(
        output_dir=str(work / "trl_run"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.lr,
        beta=args.beta,
        loss_type=["sigmoid"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.95,  # assay's optim.betas
        max_grad_norm=1.0,  # assay's trainer.gradient_clip_val
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=128,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        max_length=None,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
    )
    ends: list[tuple[float, float]] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, args_, state, control, **kwargs):
            ends.append(stamp())

    trainer = DPOTrainer(model=model, args=config, train_dataset=text, processing_class=tokenizer, callbacks=[StepEnds()])
    prepared = trainer.train_dataset
    cols = ("prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps")
    theirs, ours = ({c: list(ds[c]) for c in cols} for ds in (prepared, train))
    same = sum(all(theirs[c][i] == ours[c][i] for c in cols[:3]) for i in range(len(train)))
    ref_gap = max(abs(theirs[c][i] - ours[c][i]) for c in cols[3:] for i in range(len(train)))
    trainer.train()
    return {**throughput(ends, args), "trl_version": trl.__version__, "optim": config.optim,
            "same_tokens_as_assay": f"{same}/{len(train)}", "max_ref_logp_gap_vs_assay": round(ref_gap, 5)}


# ---- (c) bare PyTorch -------------------------------------------------------------------------------
def run_bare(args: argparse.Namespace, work: Path) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    model, tokenizer, train = load_shared(work)
    model.train()
    pad = tokenizer.pad_token_id
    prompts, chosen, rejected = list(train["prompt_ids"]), list(train["chosen_ids"]), list(train["rejected_ids"])
    ref = torch.tensor([list(train["ref_chosen_logps"]), list(train["ref_rejected_logps"])], dtype=torch.float32)  # [2, N]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)

    def batch(rows: list[int]):
        seqs = [prompts[i] + chosen[i] for i in rows] + [prompts[i] + rejected[i] for i in rows]
        starts = [len(prompts[i]) for i in rows] * 2
        t = max(map(len, seqs))
        ids = torch.full((len(seqs), t), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), t), dtype=torch.long)
        response = torch.zeros((len(seqs), t), dtype=torch.bool)
        for k, (s, p) in enumerate(zip(seqs, starts)):
            ids[k, : len(s)] = torch.tensor(s)
            mask[k, : len(s)] = 1
            response[k, p : len(s)] = True
        return ids, mask, response

    order = torch.randperm(len(train)).tolist()
    ends: list[tuple[float, float]] = []
    for step in range(args.steps):
        start = (step * args.batch_size) % len(train)
        rows = order[start : start + args.batch_size]
        ids, mask, response = batch(rows)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        token_logps = -F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none").view(ids.size(0), -1)
        logps = (token_logps * response[:, 1:]).sum(-1)
        policy_chosen, policy_rejected = logps.chunk(2)
        margin = (policy_chosen - ref[0, rows]) - (policy_rejected - ref[1, rows])
        loss = -F.logsigmoid(args.beta * margin).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ends.append(stamp())
    return throughput(ends, args)


RUNNERS = {"assay": run_assay, "trl": run_trl, "bare": run_bare}


# ---- driver -----------------------------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    out = prepare(args, work) if args.one == "prepare" else RUNNERS[args.one](args, work)
    out.update(contender=args.one, peak_rss_mib=round(out.get("peak_rss_mib", peak_rss_mib()), 1), threads=torch.get_num_threads())
    print("RESULT " + json.dumps(out), flush=True)


def spawn(args: argparse.Namespace, what: str, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--one", what, "--work", str(work)]
    for key in ("steps", "warmup", "batch_size", "pairs", "threads", "beta", "lr", "seed"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--assay-overrides", *args.assay_overrides]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{what} failed (exit {proc.returncode})")
    return {**json.loads(lines[-1][len("RESULT "):]), "load1_before": round(load_before, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per contender")
    p.add_argument("--warmup", type=int, default=10, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=64, help="pairs per optimizer step")
    p.add_argument("--pairs", type=int, default=2048, help="training pairs (data.max_train_examples)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (and OMP_NUM_THREADS) in every contender")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="rounds of (assay, trl, bare); medians over rounds are reported")
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    p.add_argument("--assay-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra Hydra overrides for the assay contender and the shared preparation, e.g. objective.share_prompt=false")
    p.add_argument("--results", default=str(HERE / "results.jsonl"), help="append one JSON line per measurement here")
    p.add_argument("--one", choices=("prepare", *CONTENDERS), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not 0 < args.warmup < args.steps:
        p.error("--warmup must be in [1, steps)")
    if args.one:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="dpo_throughput_") as tmp:
        work = Path(tmp)
        info = spawn(args, "prepare", work)
        print(f"data: {info['pairs']} pairs, vocab {info['vocab']}, {info['params']:,} parameters, "
              f"tokens per sequence max {info['max_tokens']} mean {info['mean_tokens']}")
        rounds: dict[str, list[dict]] = {c: [] for c in args.contenders}
        for r in range(args.repeats):
            for c in args.contenders:
                res = spawn(args, c, work)
                res.update(round=r, assay_overrides=args.assay_overrides, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size, pairs=info["pairs"],
                           beta=args.beta, lr=args.lr, cpu_count=os.cpu_count(), time=time.strftime("%Y-%m-%dT%H:%M:%S"))
                rounds[c].append(res)
                print(f"  round {r} {c:5s}: {res['pairs_per_s']:7.1f} pairs/s ({res['pairs_per_cpu_s']:7.1f} per CPU-s)  "
                      f"{res['step_ms']:7.1f} ms/step  peak RSS {res['peak_rss_mib']:6.1f} MiB  (load1 before {res['load1_before']})", flush=True)
                with open(args.results, "a") as f:
                    f.write(json.dumps(res) + "\n")
    report(rounds)


def median(results: list[dict], key: str) -> float:
    values = sorted(r[key] for r in results)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def report(rounds: dict[str, list[dict]]) -> None:
    """Medians over rounds, per contender and per column, and the ratios the issue's targets name."""
    keys = ("pairs_per_s", "pairs_per_cpu_s", "step_ms", "peak_rss_mib")
    med = {c: {k: median(rs, k) for k in keys} for c, rs in rounds.items()}
    print(f"\nmedian of {len(next(iter(rounds.values())))} round(s)")
    print(f"{'contender':10s} {'pairs/s':>9s} {'pairs/CPU-s':>12s} {'ms/step':>9s} {'peak RSS MiB':>13s}")
    for c, m in med.items():
        print(f"{c:10s} {m['pairs_per_s']:9.1f} {m['pairs_per_cpu_s']:12.1f} {m['step_ms']:9.1f} {m['peak_rss_mib']:13.1f}")
    if "assay" in med:
        a = med["assay"]
        for other, target in (("trl", 1.3), ("bare", 0.9)):
            if other in med:
                o = med[other]
                print(f"assay/{other} throughput: {a['pairs_per_s'] / o['pairs_per_s']:.2f}x wall, "
                      f"{a['pairs_per_cpu_s'] / o['pairs_per_cpu_s']:.2f}x per CPU-s (target >= {target}x)")
        if "trl" in med:
            print(f"assay/trl peak RSS: {a['peak_rss_mib'] / med['trl']['peak_rss_mib']:.2f}x (target <= 1.0x)")
    if "trl" in rounds:
        t = rounds["trl"][0]
        print(f"trl {t['trl_version']} (optim {t['optim']}): same token ids as assay for {t['same_tokens_as_assay']} pairs, "
              f"max |ref log-prob gap| {t['max_ref_logp_gap_vs_assay']}")


if __name__ == "__main__":
    main()
