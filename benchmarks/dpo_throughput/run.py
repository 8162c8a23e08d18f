"""DPO (and SFT) training throughput on CPU: assay vs TRL's DPOTrainer (SFTTrainer) vs a bare PyTorch loop.

    .venv/bin/python benchmarks/dpo_throughput/run.py [--steps N --batch-size B --threads T ...]
    .venv/bin/python benchmarks/dpo_throughput/run.py --arm realistic   # SmolLM2-135M, UltraFeedback-like lengths, LoRA and full
    .venv/bin/python benchmarks/dpo_throughput/run.py --arm realistic --objective sft --threads 1 2   # SFT, at 1 and 2 threads

Two arms. ``tiny`` (the default) is described below. ``realistic`` trains SmolLM2-135M (the real
weights of ``model=smollm2_135m``, ``assay-fetch smollm2``; a Llama of hidden 576, 30 layers, 9
heads / 3 KV heads, vocabulary 49,152; ``--init config`` builds the same architecture from its
config with random weights instead) on a local JSON-lines file of UltraFeedback-binarized's schema
(``prompt``, ``chosen`` / ``rejected`` message lists, scores), generated deterministically by
:func:`write_ultrafeedback` with prompts of about 100-300 tokens and responses of about 50-200, in two
modes in the same invocation, interleaved contender by contender: LoRA adapters (``--lora-r``, on
q/k/v/o) and full fine-tuning.

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

MFU. Before the contenders (and again after them) the same invocation measures the machine's own
dense-matmul peak with ``assay.run.peak.peak_flops`` (the function every assay run uses; float32,
``--threads`` threads, best of 3, into a fresh cache so it is measured, not read; on CUDA the card's
datasheet bf16 peak, with a measured bf16 matmul beside it); MFU is against the measurement before
the contenders, the one after shows whether the machine's speed moved. Each contender's MFU = its model FLOPs per second ÷ that peak, with the FLOPs of
``assay.run.speed`` (PaLM, arXiv 2204.02311, appendix B), counted from the model it trains:

    FLOPs per pair = (6·N_trainable + 4·N_frozen)·tokens + 12·L·H·Q·Σ t²

N_* = weights of the matrix multiplications (every linear layer and the lm head; not the input
embedding), split by whether they are trained: full fine-tuning is 6·N per token, LoRA 4·N + 6·N_lora
(no weight gradient for the frozen base). The second term is attention (QKᵀ and AV, forward and
backward) over each sequence of t tokens. The reference model costs 0 FLOPs a step: every contender
precomputes its log-probs before timing. ``tokens`` and Σ t² are the means over the training pairs of
what each contender runs per pair: two sequences (P + C and P + R tokens) for TRL and the bare loop
and for assay with ``objective.share_prompt=false``, one sequence P + C + R for assay's shared-prompt
default. Tokens/s is pairs/s times those tokens.

SFT (``--objective sft``). Each example is a row's prompt and one response (the realistic arm: the
chosen reply, ``data.columns={completion:chosen}``; the tiny arm: the skills corpus's completion),
trained on with the loss on the response tokens only, one sequence P + C per example padded to the
batch's longest, nothing precomputed:

- ``assay``: as above with ``objective=sft`` and ``data.format=sft`` (per-sample dynamics on). Its
  loss is the mean over the batch's examples of each example's mean token NLL.
- ``trl``: ``trl.SFTTrainer`` on a prompt-completion dataset (``completion_only_loss=True``: the
  loss on the completion tokens), ``packing=False`` and ``padding_free=False`` (TRL's defaults,
  recorded in the row), otherwise configured as its DPO contender. Its loss is the mean over all the
  batch's completion tokens; the token ids, and which of them carry the loss, are checked against
  assay's for every example.
- ``bare``: pad to the batch's longest, one forward, the mean NLL of the batch's completion tokens,
  clipping, AdamW.

The losses weigh tokens differently (per example vs per token), which changes the gradient, not the
work: the same sequences pass forward and backward. Samples/s, tokens/s and MFU count the real
(non-pad) tokens of the examples, P + C, averaged over the training examples: the same number for
every contender, so the ratios compare the same work (the padding each contender computes is not
counted; all three pad alike).

Threads. ``--threads 1 2`` runs every (thread count, mode, contender) combination in every round,
interleaved (thread counts outermost, so the contenders of one table run back to back), measures the
peak at each thread count (each table's MFU is against its own), and prints one table per thread
count and mode.

Load. The 1-minute load average is recorded before and after every contender. A result row is
written only when the load before the contender is at most its thread count (the machine was
otherwise idle); before each contender the script waits up to ``--settle`` seconds for the load to
fall that far (the contender before it is part of the 1-minute average). ``--force`` writes every
row anyway. Rows carry ``"objective"`` (``dpo`` or ``sft``); SFT rows name their rates
``samples_per_s`` / ``samples_per_cpu_s`` and their count ``examples``.
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
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
# Llama architectures for --init config (SmolLM2's published configs; "smoke" for a test of the script)
LLAMA_SIZES = {
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                 vocab_size=49152, max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True),
    "360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                 vocab_size=49152, max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True),
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  vocab_size=1024, max_position_embeddings=2048, tie_word_embeddings=True),
}

# ---- the realistic arm's data: UltraFeedback-binarized's schema, generated deterministically ----------
WORDS = """the of and to in is that for it as with was on be by at this are from or have an they which one you
were all we when there can been has more if will would their what so about out up into them some could time
these two may then do first any my now such like our over man me even most made after also did many before
must through back years where much your way well down should because each just those people how too little
state good very make world still own see men work long get here between both life being under never day same
another know while last might us great old year off come since against go came right used take three small
large data model train learn answer question step value result water light river city garden market letter
story music paper table window morning evening summer winter history science number reason method problem
simple careful clear short example detail figure system process energy growth change level point order""".split()


def write_ultrafeedback(path: Path, rows: int, seed: int, prompt_words=(90, 270), response_words=(45, 180)) -> Path:
    """A JSON-lines file with UltraFeedback-binarized's schema (prompt, prompt_id, chosen / rejected /
    messages as user+assistant message lists, score_chosen / score_rejected): seeded word sequences
    whose lengths are drawn uniformly, so that with SmolLM2's tokenizer (about 1.1 tokens per word
    here) prompts are about 100-300 tokens and responses about 50-200. The token counts that were
    actually trained on are reported by the preparation step."""
    import hashlib
    import random

    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
        for i in range(0, len(words), rng.randint(8, 16)):
            words[i] = words[i].capitalize()
        return " ".join(words) + "."

    with open(path, "w") as f:
        for _ in range(rows):
            prompt = text(*prompt_words)
            chosen, rejected = text(*response_words), text(*response_words)
            conv = lambda answer: [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]  # noqa: E731
            f.write(json.dumps({
                "prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
                "chosen": conv(chosen), "rejected": conv(rejected), "messages": conv(chosen),
                "score_chosen": float(rng.randint(6, 10)), "score_rejected": float(rng.randint(1, 5)),
            }) + "\n")
    return path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def arm_overrides(args: argparse.Namespace) -> list[str]:
    """Model and data of the arm (the tiny arm keeps the defaults: tiny_llama on the skills corpus)."""
    if args.arm == "tiny":
        return []
    model = ["model=smollm2_135m"] if args.init == "weights" else []  # config: see prepare()
    # SFT reads the same file: each row's prompt and its chosen reply (the schema's completion column)
    sft = ["data.columns={completion:chosen}"] if args.objective == "sft" else []
    return [*model, "data=jsonl", f"data.train_file={args.data_file}", "data.schema=ultrafeedback", *sft, "data.max_length=1024",
            "data.val_fraction=0.2", "data.test_fraction=0.2", f"data.eval_batch_size={args.batch_size}"]


def mode_overrides(args: argparse.Namespace) -> list[str]:
    return [f"model.lora.r={args.lora_r}", f"model.lora.alpha={2 * args.lora_r}", f"model.lora.target_modules=[{','.join(LORA_TARGETS)}]"] if args.mode == "lora" else []


def assay_overrides(args: argparse.Namespace, out_dir: Path) -> list[str]:
    """The run as ``assay-train`` would compose it; only what the benchmark fixes differs from the defaults."""
    if args.objective == "sft":
        objective = ["objective=sft", "data.format=sft", f"data.max_train_examples={args.pairs}", f"data.batch_size={args.batch_size}"]
    else:
        objective = ["objective=dpo", "data.format=preference", f"data.max_train_examples={args.pairs}", f"data.batch_size={args.batch_size}",
                     f"objective.beta={args.beta}"]
    return [
        *arm_overrides(args),
        *objective,
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


def compose(args: argparse.Namespace, out_dir: Path, extra: tuple[str, ...] = ()):
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from assay.config import validate
    from assay.paths import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=[*assay_overrides(args, out_dir), *extra], return_hydra_config=True)
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
    if args.arm == "realistic" and args.init == "config":
        # A SmolLM2 architecture with random weights, built from its config (no download): the
        # tokenizer is the one tiny_llama trained on this corpus, the vocabulary (and so the
        # embedding and output layer) SmolLM2's 49,152.
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(args.seed)
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_SIZES[args.size], pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None))
    data = spec.data
    train = tokenize_split(examples.splits["train"], tokenizer, data.format, data.separator, data.max_length)
    train = train.add_column("_row", list(range(len(train))))
    if args.objective == "sft":  # nothing to precompute: SFT has no reference model
        train.save_to_disk(str(work / "train"))
        model.save_pretrained(work / "model")
        tokenizer.save_pretrained(work / "tokenizer")
        return {**sft_info(train, tokenizer, model), "_flops": mode_flops(model, args, sft_tokens(train))}
    splits, _ = attach_reference_logps(
        model.to(args.device), DatasetDict(train=train), tokenizer.pad_token_id, data.eval_batch_size, work / "reference", spec.objective.collation
    )
    model = model.cpu()
    splits["train"].save_to_disk(str(work / "train"))
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "tokenizer")
    lengths = [len(p) + max(len(c), len(r)) for p, c, r in zip(train["prompt_ids"], train["chosen_ids"], train["rejected_ids"])]
    prompt = [len(p) for p in train["prompt_ids"]]
    response = [len(x) for x in list(train["chosen_ids"]) + list(train["rejected_ids"])]
    return {
        "pairs": len(train),
        "vocab": len(tokenizer),
        "params": sum(p.numel() for p in model.parameters()),
        "max_tokens": max(lengths),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "prompt_tokens": [min(prompt), round(sum(prompt) / len(prompt), 1), max(prompt)],
        # the tokens of the two sequences prompt+chosen and prompt+rejected: the same work for every contender
        "pair_tokens": round(sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(train["prompt_ids"], train["chosen_ids"], train["rejected_ids"])) / len(train), 1),
        "response_tokens": [min(response), round(sum(response) / len(response), 1), max(response)],
        "_flops": mode_flops(model, args, pair_tokens(train, False)),
    }


def sft_info(train, tokenizer, model) -> dict:
    """What the SFT examples hold: prompt and completion tokens (the completion ends in eos), and
    the tokens of prompt + completion, which every contender computes (padding aside)."""
    prompt = [len(p) for p in train["prompt_ids"]]
    completion = [len(c) for c in train["completion_ids"]]
    lengths = [p + c for p, c in zip(prompt, completion)]
    stats = lambda xs: [min(xs), round(sum(xs) / len(xs), 1), max(xs)]  # noqa: E731
    return {
        "examples": len(train),
        "vocab": len(tokenizer),
        "params": sum(p.numel() for p in model.parameters()),
        "prompt_tokens": stats(prompt),
        "completion_tokens": stats(completion),
        "example_tokens": stats(lengths),
    }


def mode_flops(model, args: argparse.Namespace, tokens: tuple[float, float]) -> dict:
    """Training FLOPs of one sample (an SFT example, or a DPO pair as two sequences) in each mode,
    for the time estimate printed before the contenders run."""
    import torch

    from assay.run.speed import ModelShape, model_shape, train_flops

    full = model_shape(model)
    lora = sum(args.lora_r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS)
    shapes = {"full": full, "lora": ModelShape(lora, full.params, full.layers, full.attention_width)}
    return {mode: train_flops(shape, *tokens) for mode, shape in shapes.items()}


def load_shared(work: Path, model: bool = True, lora: int = 0):
    from datasets import load_from_disk
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
    net = LlamaForCausalLM.from_pretrained(work / "model") if model else None
    if net is not None and lora:
        # the same adapters as assay's model.lora (peft, r, alpha = 2r, no dropout, q/k/v/o)
        from peft import LoraConfig, get_peft_model

        torch_seed(0)
        net = get_peft_model(net, LoraConfig(r=lora, lora_alpha=2 * lora, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    return net, tokenizer, load_from_disk(str(work / "train"))


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def stamp() -> tuple[float, float]:
    """(wall clock, CPU time of this process): on a shared machine the second is what the work cost.
    On a GPU the queued kernels are waited for first, so the stamp is the step's real end."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def unit(args: argparse.Namespace) -> str:
    """What a sample is: a preference pair (DPO) or an example (SFT)."""
    return "samples" if args.objective == "sft" else "pairs"


def throughput(ends: list[tuple[float, float]], args: argparse.Namespace) -> dict:
    """Pairs (SFT: samples) per second over the steps after the warm-up; ``ends[i]`` stamps the end of
    optimizer step i+1.

    ``pairs_per_s`` divides by wall time; ``pairs_per_cpu_s`` by the process's CPU time over the same
    span, which other load on the machine inflates far less (with one thread they agree on an idle
    machine; with T threads the CPU time is up to T times the wall time).
    """
    assert len(ends) == args.steps, f"expected {args.steps} step timestamps, got {len(ends)}"
    timed, pairs = args.steps - args.warmup, (args.steps - args.warmup) * args.batch_size
    seconds = ends[-1][0] - ends[args.warmup - 1][0]
    cpu_seconds = ends[-1][1] - ends[args.warmup - 1][1]
    u = unit(args)
    return {"timed_steps": timed, "seconds": round(seconds, 3), "step_ms": round(1000 * seconds / timed, 2),
            f"{u}_per_s": round(pairs / seconds, 3), "cpu_seconds": round(cpu_seconds, 3), f"{u}_per_cpu_s": round(pairs / cpu_seconds, 3)}


def pair_tokens(train, shared: bool) -> tuple[float, float]:
    """(tokens, Σ t²) per pair, averaged over the training pairs: one sequence prompt + chosen +
    rejected (assay's shared-prompt layout), or the two sequences prompt + chosen and prompt + rejected."""
    rows = list(zip(train["prompt_ids"], train["chosen_ids"], train["rejected_ids"]))
    if shared:
        lengths = [[len(p) + len(c) + len(r)] for p, c, r in rows]
    else:
        lengths = [[len(p) + len(c), len(p) + len(r)] for p, c, r in rows]
    return sum(map(sum, lengths)) / len(rows), sum(t * t for ts in lengths for t in ts) / len(rows)


def speed(result: dict, model, train, shared: bool, args: argparse.Namespace) -> dict:
    """Tokens/s and MFU of a contender from its pairs/s, the model it trained and its layout."""
    from assay.run.speed import model_shape, train_flops

    shape = model_shape(model)
    tokens, square = pair_tokens(train, shared)
    flops_per_pair = train_flops(shape, tokens, square)
    out = {"layout": "shared prompt (P+C+R)" if shared else "two sequences (P+C, P+R)", "tokens_per_pair": round(tokens, 1),
           "n_trainable": shape.trainable, "n_frozen": shape.frozen, "layers": shape.layers, "attention_width": shape.attention_width,
           "flops_per_pair": flops_per_pair, "flops_per_token": round(flops_per_pair / tokens, 1),
           "tokens_per_s": round(result["pairs_per_s"] * tokens, 2), "tokens_per_cpu_s": round(result["pairs_per_cpu_s"] * tokens, 2)}
    if args.peak_flops:
        out["mfu"] = round(result["pairs_per_s"] * flops_per_pair / args.peak_flops, 5)
    return out


def sft_tokens(train) -> tuple[float, float]:
    """(tokens, t²) per SFT example, averaged over the training examples: the real tokens of its one
    sequence prompt + completion, padding excluded."""
    lengths = [len(p) + len(c) for p, c in zip(train["prompt_ids"], train["completion_ids"])]
    return sum(lengths) / len(lengths), sum(t * t for t in lengths) / len(lengths)


def sft_speed(result: dict, model, train, args: argparse.Namespace) -> dict:
    """Tokens/s and MFU of an SFT contender from its samples/s and the model it trained.

    Every contender pads each batch to its longest example; the padding is computed but not counted:
    tokens and FLOPs are those of the real tokens (the same number for every contender), so the
    ratios compare the same work."""
    from assay.run.speed import model_shape, train_flops

    shape = model_shape(model)
    tokens, square = sft_tokens(train)
    flops = train_flops(shape, tokens, square)
    out = {"layout": "one sequence (P+C) a sample, padded to the batch's longest", "tokens_per_sample": round(tokens, 1),
           "n_trainable": shape.trainable, "n_frozen": shape.frozen, "layers": shape.layers, "attention_width": shape.attention_width,
           "flops_per_sample": flops, "flops_per_token": round(flops / tokens, 1),
           "tokens_per_s": round(result["samples_per_s"] * tokens, 2), "tokens_per_cpu_s": round(result["samples_per_cpu_s"] * tokens, 2)}
    if args.peak_flops:
        out["mfu"] = round(result["samples_per_s"] * flops / args.peak_flops, 5)
    return out


# ---- (a) assay --------------------------------------------------------------------------------------
def run_assay(args: argparse.Namespace, work: Path) -> dict:
    import pytorch_lightning as pl
    from datasets import DatasetDict

    from assay.data.datamodule import AssayDataModule, SamplerProgress
    from assay.dynamics.store import read_store
    from assay.module import AssayModule
    from assay.run.speed import Throughput
    from assay.selection import SelectionContext

    run_dir = work / "assay_run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh dynamics store on every run
    # the prepared weights and tokenizer as an earlier stage's run directory; LoRA adapters, when
    # asked for, are added by the model entry exactly as in assay-train
    on_gpu = ("trainer=gpu",) if args.device == "cuda" else ()
    cfg, spec = compose(args, run_dir, (f"model.init_from={work}", *mode_overrides(args), *on_gpu))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model, tokenizer = spec.model.build(None)
    _, _, train = load_shared(work, model=False)
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

    # What every assay run reports (assay.run.speed), against the peak this invocation measured; its
    # own clock leaves only the first step out, the benchmark's leaves --warmup steps out.
    reported = Throughput(peak_flops=args.peak_flops or None)
    callbacks = [SamplerProgress(), *spec.dynamics.callbacks(run_dir), *([reported] if spec.trainer.throughput else []), StepEnds()]
    trainer = spec.trainer.build(model, callbacks=callbacks, logger=False, enable_checkpointing=False, default_root_dir=str(run_dir))
    trainer.fit(module, datamodule=datamodule)
    peak = peak_rss_mib()  # training's peak, before the check below reads the store back
    records = len(read_store(run_dir / "dynamics"))
    assert records == args.steps * args.batch_size, f"dynamics store holds {records} records, expected {args.steps * args.batch_size}"
    result = throughput(ends, args)
    own = {k.replace("speed/", "assay_reported_"): v for k, v in reported.summary().items() if k in ("speed/tokens_per_s", "speed/mfu")}
    if args.objective == "sft":
        rates = sft_speed(result, module.model, train, args)
    else:
        rates = speed(result, module.model, train, bool(spec.objective.collation.get("share_prompt")), args)
    return {**result, **rates, **own, "dynamics_records": records, "peak_rss_mib": peak, **gpu_peak(args)}


# ---- (b) TRL ----------------------------------------------------------------------------------------
def trl_settings(args: argparse.Namespace, work: Path) -> dict:
    """The TRL trainer arguments both TRL contenders share: assay's optimizer, clipping, schedule and
    batch, nothing logged, evaluated or saved."""
    return dict(
        output_dir=str(work / "trl_run"), per_device_train_batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.95,  # assay's optim.betas
        max_grad_norm=1.0,  # assay's trainer.gradient_clip_val
        gradient_checkpointing=False,
        bf16=args.device == "cuda",  # the same bf16 autocast as assay's trainer=gpu
        use_cpu=args.device == "cpu",
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=args.seed,
    )


def step_ends(ends: list):
    """A TRL callback that stamps the end of every optimizer step into ``ends``."""
    from transformers import TrainerCallback

    class StepEnds(TrainerCallback):
        def on_step_end(self, args_, state, control, **kwargs):
            ends.append(stamp())

    return StepEnds()


def run_trl(args: argparse.Namespace, work: Path) -> dict:
    if args.objective == "sft":
        return run_trl_sft(args, work)
    import torch
    import trl
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(args.seed)
    model, tokenizer, train = load_shared(work, lora=args.lora_r if args.mode == "lora" else 0)
    # TRL tokenizes text itself; assay joins prompt and response with data.separator (" "), so the
    # responses carry it in front. The token ids are compared with assay's below.
    text = train.select_columns(["prompt", "chosen", "rejected"])
    text = text.map(lambda r: {"chosen": " " + r["chosen"], "rejected": " " + r["rejected"]})
    config = DPOConfig(
        **trl_settings(args, work),
        beta=args.beta,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=128 if args.arm == "tiny" else args.batch_size,
        max_length=None,
    )
    ends: list[tuple[float, float]] = []
    trainer = DPOTrainer(model=model, args=config, train_dataset=text, processing_class=tokenizer, callbacks=[step_ends(ends)])
    prepared = trainer.train_dataset
    cols = ("prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps")
    theirs, ours = ({c: list(ds[c]) for c in cols} for ds in (prepared, train))
    same = sum(all(theirs[c][i] == ours[c][i] for c in cols[:3]) for i in range(len(train)))
    ref_gap = max(abs(theirs[c][i] - ours[c][i]) for c in cols[3:] for i in range(len(train)))
    trainer.train()
    result = throughput(ends, args)
    return {**result, **speed(result, model, train, False, args), **gpu_peak(args), "trl_version": trl.__version__, "optim": config.optim,
            "same_tokens_as_assay": f"{same}/{len(train)}", "max_ref_logp_gap_vs_assay": round(ref_gap, 5)}


# ---- (c) bare PyTorch -------------------------------------------------------------------------------
def run_bare(args: argparse.Namespace, work: Path) -> dict:
    if args.objective == "sft":
        return run_bare_sft(args, work)
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    model, tokenizer, train = load_shared(work, lora=args.lora_r if args.mode == "lora" else 0)
    prompts, chosen, rejected = list(train["prompt_ids"]), list(train["chosen_ids"]), list(train["rejected_ids"])
    ref = torch.tensor([list(train["ref_chosen_logps"]), list(train["ref_rejected_logps"])], dtype=torch.float32, device=args.device)  # [2, N]

    def batch(rows: list[int]):
        seqs = [prompts[i] + chosen[i] for i in rows] + [prompts[i] + rejected[i] for i in rows]
        ids, mask = pad_right(seqs, tokenizer.pad_token_id)
        response = torch.zeros(ids.shape, dtype=torch.bool)
        for k, (s, p) in enumerate(zip(seqs, [len(prompts[i]) for i in rows] * 2)):
            response[k, p : len(s)] = True
        return ids, mask, response

    def loss(logits, ids, response, rows):
        token_logps = -F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none").view(ids.size(0), -1)
        policy_chosen, policy_rejected = (token_logps * response[:, 1:]).sum(-1).chunk(2)
        margin = (policy_chosen - ref[0, rows]) - (policy_rejected - ref[1, rows])
        return -F.logsigmoid(args.beta * margin).mean()

    result = throughput(bare_steps(args, model, len(train), batch, loss), args)
    return {**result, **speed(result, model, train, False, args), **gpu_peak(args)}


def pad_right(seqs: list[list[int]], pad: int):
    """[n, T] token ids padded on the right with ``pad`` and the matching attention mask."""
    import torch

    t = max(map(len, seqs))
    ids = torch.full((len(seqs), t), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, : len(s)] = torch.tensor(s)
        mask[k, : len(s)] = 1
    return ids, mask


def bare_steps(args: argparse.Namespace, model, rows: int, batch, loss) -> list[tuple[float, float]]:
    """The bare loop's training: ``args.steps`` AdamW steps over a seeded order of the ``rows``
    examples, ``batch(rows)`` -> (ids, mask, extra), ``loss(logits, ids, extra, rows)`` on the logits
    of every position, clipping at 1.0; returns the end stamp of every step."""
    import torch

    model.to(args.device).train()
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    order = torch.randperm(rows).tolist()
    ends: list[tuple[float, float]] = []
    for step in range(args.steps):
        start = (step * args.batch_size) % rows
        picked = order[start : start + args.batch_size]
        ids, mask, extra = (t.to(args.device) for t in batch(picked))
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda"):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        loss(logits, ids, extra, picked).backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ends.append(stamp())
    return ends


# ---- SFT: TRL's SFTTrainer and the bare loop ------------------------------------------------------
def run_trl_sft(args: argparse.Namespace, work: Path) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(args.seed)
    model, tokenizer, train = load_shared(work, lora=args.lora_r if args.mode == "lora" else 0)
    # A prompt-completion dataset: TRL tokenizes prompt and prompt + completion + eos itself and puts
    # the loss on the completion tokens only. assay joins prompt and completion with data.separator
    # (" "), so the completions carry it in front; the token ids are compared with assay's below.
    text = Dataset.from_dict({"prompt": list(train["prompt"]), "completion": [" " + c for c in train["completion"]]})
    config = SFTConfig(
        **trl_settings(args, work),
        completion_only_loss=True,
        packing=False,  # TRL's default: one example a row, padded to the batch's longest (as the bare loop)
        padding_free=False,  # TRL's default
        max_length=None,  # assay truncated at data.max_length=1024 already; nothing here is longer
    )
    ends: list[tuple[float, float]] = []
    trainer = SFTTrainer(model=model, args=config, train_dataset=text, processing_class=tokenizer, callbacks=[step_ends(ends)])
    prepared = trainer.train_dataset  # in the dataset's order (shuffle_dataset=False)
    ids, labels = list(prepared["input_ids"]), list(prepared["labels"])
    prompts, completions = list(train["prompt_ids"]), list(train["completion_ids"])
    same = sum(ids[i] == prompts[i] + completions[i] for i in range(len(train)))
    same_loss = sum(labels[i] == [-100] * len(prompts[i]) + completions[i] for i in range(len(train)))
    trainer.train()
    result = throughput(ends, args)
    return {**result, **sft_speed(result, model, train, args), **gpu_peak(args), "trl_version": trl.__version__, "optim": config.optim,
            "packing": config.packing, "padding_free": config.padding_free, "completion_only_loss": config.completion_only_loss,
            "loss_type": config.loss_type, "same_tokens_as_assay": f"{same}/{len(train)}", "same_loss_tokens_as_assay": f"{same_loss}/{len(train)}"}


def run_bare_sft(args: argparse.Namespace, work: Path) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    model, tokenizer, train = load_shared(work, lora=args.lora_r if args.mode == "lora" else 0)
    prompts, completions = list(train["prompt_ids"]), list(train["completion_ids"])

    def batch(rows: list[int]):
        ids, mask = pad_right([prompts[i] + completions[i] for i in rows], tokenizer.pad_token_id)
        labels = torch.full(ids.shape, -100, dtype=torch.long)
        for k, i in enumerate(rows):
            labels[k, len(prompts[i]) : len(prompts[i]) + len(completions[i])] = torch.tensor(completions[i])
        return ids, mask, labels

    def loss(logits, ids, labels, rows):  # the mean NLL over the batch's completion tokens
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100)

    result = throughput(bare_steps(args, model, len(train), batch, loss), args)
    return {**result, **sft_speed(result, model, train, args), **gpu_peak(args)}


def measure_peak(args: argparse.Namespace, work: Path) -> dict:
    """The machine's peak FLOP/s as every assay run gets it (``assay.run.peak.peak_flops``), measured
    now: a fresh cache directory each time, so nothing is read from an earlier measurement."""
    import torch

    from assay.run.peak import matmul_flops, peak_flops

    cache = Path(tempfile.mkdtemp(prefix="peak_", dir=work))
    flops, source = peak_flops(args.device, cache_dir=cache, threads=args.threads)
    out = {"peak_flops": flops, "peak_source": source}
    if args.device == "cuda":  # the datasheet's number, and what a bf16 matmul reaches on this card
        out["measured_bf16_matmul_flops"] = matmul_flops(8192, "cuda", torch.bfloat16)
    return out


def gpu_peak(args: argparse.Namespace) -> dict:
    """Peak GPU memory of the process's tensors (allocator statistics), on CUDA."""
    if args.device != "cuda":
        return {}
    import torch

    return {"peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1), "gpu": torch.cuda.get_device_name(0)}


RUNNERS = {"assay": run_assay, "trl": run_trl, "bare": run_bare}
ARMS = ("tiny", "realistic")
OBJECTIVES = ("dpo", "sft")
ARM_DEFAULTS = {
    "tiny": {"steps": 60, "warmup": 10, "batch_size": 64, "pairs": 2048, "repeats": 3, "modes": ["full"]},
    # a 135M model at 300-500 tokens a sequence is seconds per sample on one CPU core: 6 timed steps of
    # 2 samples (each contender about 1.5-3.5 minutes at one thread) in 3 rounds, so that one slow step
    # or a burst of other load moves a median little
    "realistic": {"steps": 8, "warmup": 2, "batch_size": 2, "repeats": 3, "modes": ["lora", "full"]},
}
# For the time estimate printed before the contenders run, not for any result: the share of the
# measured matmul peak a contender's training step reaches on a CPU (float32; the realistic arm's
# per-CPU-second rates of TRL and the bare loop on 2026-12-01, against the 105-110 GFLOP/s one core
# of that 2-core AMD EPYC machine measured in later smoke runs), and the seconds a contender's
# process spends outside its training steps (imports, loading the model and data, the trainer's setup).
ASSUMED_MFU = {"full": 0.35, "lora": 0.28}
STARTUP_S = {"tiny": 10.0, "realistic": 20.0}


# ---- driver -----------------------------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    if args.one == "peak":
        print("RESULT " + json.dumps(measure_peak(args, work)), flush=True)
        return
    out = prepare(args, work) if args.one == "prepare" else RUNNERS[args.one](args, work)
    out.update(contender=args.one, peak_rss_mib=round(out.get("peak_rss_mib", peak_rss_mib()), 1), threads=torch.get_num_threads())
    print("RESULT " + json.dumps(out), flush=True)


def spawn(args: argparse.Namespace, what: str, work: Path, mode: str = "full", **fixed) -> dict:
    """Run ``what`` in its own process; ``fixed`` overrides arguments for it (threads, peak_flops)."""
    args = argparse.Namespace(**{**vars(args), "mode": mode, **fixed})
    cmd = [sys.executable, __file__, "--one", what, "--work", str(work)]
    for key in ("objective", "steps", "warmup", "batch_size", "pairs", "threads", "beta", "lr", "seed", "arm", "init", "size", "device", "lora_r", "data_file", "mode", "peak_flops"):
        if getattr(args, key) is not None:
            cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--assay-overrides", *args.assay_overrides]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    load_before = settled_load(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    load_after = os.getloadavg()[0]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{what} failed (exit {proc.returncode})")
    return {**json.loads(lines[-1][len("RESULT "):]), "load1_before": round(load_before, 2), "load1_after": round(load_after, 2)}


def settled_load(args: argparse.Namespace) -> float:
    """The 1-minute load average, after waiting up to ``--settle`` seconds for it to fall to the thread count."""
    deadline = time.time() + args.settle
    while os.getloadavg()[0] > args.threads and time.time() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def estimate_s(args: argparse.Namespace, flops: dict, peaks: dict[int, float], thread_counts: list[int]) -> tuple[float, float]:
    """(seconds the contenders will take, of which waiting for the load to settle), from the FLOPs of
    their steps at ``ASSUMED_MFU`` of the measured peak, ``STARTUP_S`` a process, the peak measured
    again at the end, and, each time a round goes from more threads to fewer, the wait for the
    1-minute load average to decay from the one to the other (60·ln(ratio) seconds, at most --settle)."""
    import math

    runs = sum(args.steps * args.batch_size * flops[m] / (peaks[t] * ASSUMED_MFU[m]) + STARTUP_S[args.arm]
               for t in thread_counts for m in args.modes for _ in args.contenders)
    drop = min(args.settle, 60 * math.log(max(thread_counts) / min(thread_counts)))
    settle = drop * args.repeats  # into the next round, and into the closing peak measurement
    return args.repeats * runs + settle + 10 * len(thread_counts), settle


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objective", choices=OBJECTIVES, default="dpo", help="dpo: preference pairs (DPOTrainer); sft: prompt + chosen reply as an SFT example (SFTTrainer)")
    p.add_argument("--arm", choices=ARMS, default="tiny", help="tiny: 1M-parameter Llama on the skills corpus; realistic: SmolLM2-135M on UltraFeedback-like lengths")
    p.add_argument("--init", choices=("weights", "config"), default="weights", help="realistic arm: SmolLM2-135M's real weights (assay-fetch smollm2) or its config with random weights")
    p.add_argument("--size", choices=tuple(LLAMA_SIZES), default="135m", help="--init config: which SmolLM2 architecture")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: assay with trainer=gpu, TRL with bf16, the bare loop under bf16 autocast")
    p.add_argument("--modes", nargs="+", choices=("full", "lora"), default=None, help="fine-tuning modes, interleaved (default: full for tiny; lora and full for realistic)")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = 2r, on q/k/v/o projections)")
    p.add_argument("--data-file", default=None, help="realistic arm: the UltraFeedback-schema JSON-lines file (default: generated into the work directory)")
    p.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per contender (tiny 60, realistic 8)")
    p.add_argument("--warmup", type=int, default=None, help="first steps left out of the timing (tiny 10, realistic 2)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs (SFT: examples) per optimizer step (tiny 64, realistic 2)")
    p.add_argument("--pairs", "--examples", dest="pairs", type=int, default=None,
                   help="training pairs or SFT examples (data.max_train_examples; tiny 2048, realistic steps x batch)")
    p.add_argument("--threads", type=int, nargs="+", default=[1],
                   help="torch.set_num_threads (and OMP_NUM_THREADS) in every contender; several values (--threads 1 2) are interleaved within each round")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=None, help="rounds of (assay, trl, bare); medians over rounds are reported (tiny 3, realistic 3)")
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    p.add_argument("--assay-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra Hydra overrides for the assay contender and the shared preparation, e.g. objective.share_prompt=false")
    p.add_argument("--results", default=str(HERE / "results.jsonl"), help="append one JSON line per measurement here")
    p.add_argument("--force", action="store_true", help="write result rows even when the 1-minute load average before a contender exceeds its thread count")
    p.add_argument("--settle", type=float, default=60.0, help="seconds to wait before each contender for the load average to fall to its thread count")
    p.add_argument("--peak-flops", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--one", choices=("prepare", "peak", *CONTENDERS), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    for key, default in ARM_DEFAULTS[args.arm].items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if args.pairs is None:
        args.pairs = args.steps * args.batch_size
    if not 0 < args.warmup < args.steps:
        p.error("--warmup must be in [1, steps)")
    thread_counts = list(dict.fromkeys(args.threads))
    if min(thread_counts) < 1:
        p.error("--threads must be positive")
    args.threads = max(thread_counts)  # the preparation's; each contender and peak gets its own
    if args.one:
        child(args)
        return

    sft = args.objective == "sft"
    u = unit(args)
    several = len(thread_counts) > 1
    at = lambda t: f" at {t} thread{'s' if t > 1 else ''}" if several else ""  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="dpo_throughput_") as tmp:
        work = Path(tmp)
        if args.arm == "realistic" and args.data_file is None:
            # enough rows that the train split keeps `pairs` after val/test (20% each) are carved out
            args.data_file = str(write_ultrafeedback(work / "ultrafeedback_like.jsonl", int(args.pairs / 0.6) + 4, args.seed))
        info = spawn(args, "prepare", work)
        flops = info.pop("_flops")
        peaks = {t: [spawn(args, "peak", work, threads=t)] for t in thread_counts}
        peak_at = {t: ps[0]["peak_flops"] for t, ps in peaks.items()}
        for t, ps in peaks.items():
            print(f"peak{at(t)}: {ps[0]['peak_flops'] / 1e9:.1f} GFLOP/s ({ps[0]['peak_source']}; load1 {ps[0]['load1_before']})", flush=True)
        if sft:
            print(f"data: {info['examples']} SFT examples, vocab {info['vocab']}, {info['params']:,} parameters; tokens min/mean/max: "
                  f"prompt + completion {info['example_tokens']}, prompt {info['prompt_tokens']}, completion {info['completion_tokens']}", flush=True)
        else:
            print(f"data: {info['pairs']} pairs, vocab {info['vocab']}, {info['params']:,} parameters, "
                  f"tokens per sequence max {info['max_tokens']} mean {info['mean_tokens']}; "
                  f"prompt tokens min/mean/max {info['prompt_tokens']}, response tokens {info['response_tokens']}", flush=True)
        total, settle = estimate_s(args, flops, peak_at, thread_counts)
        runs = args.repeats * len(thread_counts) * len(args.modes) * len(args.contenders)
        print(f"estimate: about {total / 60:.0f} min for {runs} contender runs ({args.steps} steps of {args.batch_size} {u} each; "
              f"{', '.join(f'{m} {flops[m] / 1e9:.3g} GFLOP a {u[:-1]}' for m in args.modes)} at an assumed "
              f"{', '.join(f'{m} {ASSUMED_MFU[m]:.0%}' for m in args.modes)} of the peak, {STARTUP_S[args.arm]:.0f} s start-up a process"
              + (f", {settle / 60:.1f} min of it waiting for the load to fall between thread counts" if settle else "") + ")", flush=True)
        rounds: dict[tuple[int, str, str], list[dict]] = {(t, m, c): [] for t in thread_counts for m in args.modes for c in args.contenders}
        for r in range(args.repeats):
            for t in thread_counts:
                for m in args.modes:
                    for c in args.contenders:  # interleaved: load drifts hit every contender alike
                        res = spawn(args, c, work, m, threads=t, peak_flops=peak_at[t])
                        res.update(peak_flops=peak_at[t], peak_source=peaks[t][0]["peak_source"], round=r, arm=args.arm, mode=m, init=args.init if args.arm == "realistic" else None, lora_r=args.lora_r if m == "lora" else 0,
                                   assay_overrides=args.assay_overrides, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                                   **({"examples": info["examples"]} if sft else {"pairs": info["pairs"]}), data=info,
                                   **({} if sft else {"beta": args.beta}), lr=args.lr, cpu_count=os.cpu_count(), time=time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   objective=args.objective)
                        res["idle"] = res["load1_before"] <= t
                        rounds[(t, m, c)].append(res)
                        print(f"  round {r} {f'{t}t ' if several else ''}{m:4s} {c:5s}: {res[f'{u}_per_s']:7.3f} {u}/s ({res[f'{u}_per_cpu_s']:7.3f} per CPU-s)  "
                              f"{res['tokens_per_s']:9.1f} tokens/s  MFU {res.get('mfu', float('nan')):6.1%}  "
                              f"{res['step_ms']:9.1f} ms/step  peak RSS {res['peak_rss_mib']:7.1f} MiB  (load1 {res['load1_before']} -> {res['load1_after']})", flush=True)
                        if res["idle"] or args.force:
                            with open(args.results, "a") as f:
                                f.write(json.dumps({**res, "forced": not res["idle"]}) + "\n")
                        else:
                            print(f"    not written to {args.results}: load1 {res['load1_before']} > {t} threads (--force writes it)", flush=True)
        for t in thread_counts:
            peaks[t].append(spawn(args, "peak", work, threads=t))
            print(f"peak{at(t)} again after the contenders: {peaks[t][1]['peak_flops'] / 1e9:.1f} GFLOP/s (load1 {peaks[t][1]['load1_before']}); "
                  f"MFU above is against the first, {peak_at[t] / 1e9:.1f}", flush=True)
    for t in thread_counts:
        for m in args.modes:
            print(f"\n== {args.arm} arm, {'SFT, ' if sft else ''}{m} fine-tuning{', ' + at(t)[4:] if several else ''}")
            (report_sft if sft else report)({c: rounds[(t, m, c)] for c in args.contenders})


def median(results: list[dict], key: str) -> float:
    values = sorted(r[key] for r in results)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def report(rounds: dict[str, list[dict]]) -> None:
    """Medians over rounds, per contender and per column, and the ratios the issue's targets name."""
    keys = ("pairs_per_s", "pairs_per_cpu_s", "tokens_per_s", "mfu", "step_ms", "peak_rss_mib")
    med = {c: {k: median(rs, k) for k in keys if all(k in r for r in rs)} for c, rs in rounds.items()}
    print(f"\nmedian of {len(next(iter(rounds.values())))} round(s)")
    print(f"{'contender':10s} {'pairs/s':>9s} {'pairs/CPU-s':>12s} {'tokens/s':>10s} {'MFU':>7s} {'ms/step':>9s} {'peak RSS MiB':>13s}")
    for c, m in med.items():
        print(f"{c:10s} {m['pairs_per_s']:9.3f} {m['pairs_per_cpu_s']:12.3f} {m['tokens_per_s']:10.1f} {m.get('mfu', float('nan')):7.1%} "
              f"{m['step_ms']:9.1f} {m['peak_rss_mib']:13.1f}")
    for c, rs in rounds.items():
        r = rs[0]
        print(f"  {c}: {r['layout']}, {r['tokens_per_pair']} tokens a pair; FLOPs/pair = (6·{r['n_trainable']:,} + 4·{r['n_frozen']:,})·tokens "
              f"+ 12·{r['layers']}·{r['attention_width']}·Σt² = {r['flops_per_pair']:.4g} ({r['flops_per_token']:.4g} a token)"
              + (f"; assay's own report: {r['assay_reported_tokens_per_s']:.1f} tokens/s, MFU {r['assay_reported_mfu']:.1%}" if "assay_reported_mfu" in r else ""))
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


def report_sft(rounds: dict[str, list[dict]]) -> None:
    """The SFT table: medians over rounds; tokens are the real (non-pad) tokens of the examples
    trained on, the same for every contender, so every column's ratio compares the same work."""
    keys = ("samples_per_s", "samples_per_cpu_s", "tokens_per_s", "tokens_per_cpu_s", "mfu", "step_ms", "peak_rss_mib")
    med = {c: {k: median(rs, k) for k in keys if all(k in r for r in rs)} for c, rs in rounds.items()}
    print(f"\nmedian of {len(next(iter(rounds.values())))} round(s)")
    print(f"{'contender':10s} {'samples/s':>10s} {'samples/CPU-s':>14s} {'tokens/s':>10s} {'tokens/CPU-s':>13s} {'MFU':>7s} {'ms/step':>9s} {'peak RSS MiB':>13s}")
    for c, m in med.items():
        print(f"{c:10s} {m['samples_per_s']:10.3f} {m['samples_per_cpu_s']:14.3f} {m['tokens_per_s']:10.1f} {m['tokens_per_cpu_s']:13.1f} "
              f"{m.get('mfu', float('nan')):7.1%} {m['step_ms']:9.1f} {m['peak_rss_mib']:13.1f}")
    r = next(iter(rounds.values()))[0]
    print(f"  {r['layout']}, {r['tokens_per_sample']} real tokens a sample; FLOPs/sample = (6·{r['n_trainable']:,} + 4·{r['n_frozen']:,})·tokens "
          f"+ 12·{r['layers']}·{r['attention_width']}·t² = {r['flops_per_sample']:.4g} ({r['flops_per_token']:.4g} a token)")
    if "assay" in rounds and "assay_reported_mfu" in rounds["assay"][0]:
        a = rounds["assay"][0]
        print(f"  assay's own report: {a['assay_reported_tokens_per_s']:.1f} tokens/s, MFU {a['assay_reported_mfu']:.1%}")
    if "assay" in med:
        a = med["assay"]
        for other, target in (("trl", " (target >= 1.5x)"), ("bare", "")):
            if other in med:
                o = med[other]
                print(f"assay/{other} tokens/s: {a['tokens_per_s'] / o['tokens_per_s']:.2f}x wall, "
                      f"{a['tokens_per_cpu_s'] / o['tokens_per_cpu_s']:.2f}x per CPU-s{target}")
        if "trl" in med:
            print(f"assay/trl peak RSS: {a['peak_rss_mib'] / med['trl']['peak_rss_mib']:.2f}x")
    if "trl" in rounds:
        t = rounds["trl"][0]
        print(f"trl {t['trl_version']} SFTTrainer (optim {t['optim']}, packing={t['packing']}, padding_free={t['padding_free']}, "
              f"completion_only_loss={t['completion_only_loss']}, loss_type={t['loss_type']}): same token ids as assay for "
              f"{t['same_tokens_as_assay']} examples, loss on the same tokens for {t['same_loss_tokens_as_assay']}")


if __name__ == "__main__":
    main()
