"""Cost of recording training dynamics, and of batched per-sample gradients.

    .venv/bin/python benchmarks/dynamics_overhead/run.py

Part 1, step time (real Lightning fits of the default tiny Llama on the skills corpus, data.batch_size
rows a step, no validation, no checkpoints):
  off          dynamics=off
  losses       dynamics=losses: per-sample loss + confidence from the training step itself, every step
  grads-<kind> dynamics=gradients at every step: losses + the norm and projection (--projections to
               --proj-dim) of every example's gradient over the last decoder layer (module taps)
A step is the wall time between consecutive batch ends (data loading, forward, backward, optimizer,
callbacks). The arms run interleaved for --rounds rounds of --steps steps so that load drift on a
shared machine hits every arm alike; each arm's number is the median step over all its rounds
(after dropping each fit's first --skip steps).

Part 2, per-sample gradient scoring of the same --examples training examples on the same model and
parameters (the last decoder layer; only it requires grad, in every arm): one forward + backward per
example (the loop), ``gradient_features`` (one batched forward/backward with module taps per --batch
rows), and the earlier ``vmap(grad(functional_call))`` path at the same batch sizes. Each arm runs in
its own process: the median wall time of --repeats runs after a warm-up, and peak resident memory
(VmHWM) above the process's size once the model and data are built (the kernel's peak mark is reset
there); every arm's gradients are checked against the loop's.

Part 3, projection fidelity and cost on those exact gradients: per projection kind and --proj-dim,
the time to project all --examples rows, and over --fidelity-seeds seeds the mean absolute error of
the pairwise cosine similarities (what LESS scores with) against the exact ones.

Torch runs on --threads threads (default 1: the measurements share the machine with other work).
Results go to stdout as a Markdown table and to results.json beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent


def build(overrides: list[str]):
    """Examples, model and tokenized splits exactly as ``assay-train`` builds them."""
    from datasets import DatasetDict
    from hydra import compose, initialize_config_dir

    from assay.config import validate
    from assay.data import build_examples
    from assay.data.collate import tokenize_split
    from assay.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    spec = validate(cfg)
    examples = build_examples(spec.data, spec.mixture, spec.noise)
    model, tokenizer = spec.model.build(examples.splits)
    d = spec.data
    tokenized = DatasetDict({s: tokenize_split(ds, tokenizer, d.format, d.separator, d.max_length).add_column("_row", list(range(len(ds)))) for s, ds in examples.splits.items()})
    return spec, model, tokenizer, tokenized


class StepTimer(pl.Callback):
    def __init__(self):
        self.marks: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        self.marks.append(time.perf_counter())


def timed(callback: pl.Callback, sink: list[float]) -> pl.Callback:
    """Record the wall time of the callback's own ``on_train_batch_end`` at every step: its cost,
    isolated from the load drift that moves whole steps on a shared machine."""
    inner = callback.on_train_batch_end

    def hook(*args, **kwargs):
        t = time.perf_counter()
        inner(*args, **kwargs)
        sink.append(time.perf_counter() - t)

    callback.on_train_batch_end = hook
    return callback


_timed_arm: dict = {"arm": None, "hooks": None}


def _install_timers() -> None:
    """Wrap ``per_sample_grads`` and ``project`` in assay.models.grads (once) so that every call's time
    lands in the hooks of the grads arm running now; the recorder's pipeline looks both up there when it runs."""
    from assay.models import grads

    if getattr(grads, "_benchmark_timed", False):
        return

    def timed_fn(fn, key):
        def call(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            if _timed_arm["arm"] is not None:
                _timed_arm["hooks"].setdefault(f"{_timed_arm['arm']}/{key}", []).append(time.perf_counter() - t)
            return out

        return call

    grads.per_sample_grads = timed_fn(grads.per_sample_grads, "per_sample_grads")
    grads.project = timed_fn(grads.project, "projection")
    grads._benchmark_timed = True


def gradient_recorder(run_dir: Path, params, proj_dim: int, projection: str) -> pl.Callback:
    """``dynamics=gradients`` recording every step over the whole batch (what LESS / CLUES features
    at every step instead of at checkpoints cost)."""
    from assay.dynamics.recording import GradientDynamics

    _install_timers()
    config = GradientDynamics(grad_every_n_steps=1, params=list(params), proj_dim=proj_dim, projection=projection, batch_size=1 << 30, flush_every=50)
    return config.callbacks(run_dir)[-1]


def fit_steps(arm: str, spec, model_state, model, tokenizer, tokenized, steps: int, names, proj_dim: int, hooks: dict) -> list[float]:
    """Step times of one fit; ``arm`` is off, losses or grads-<projection kind>."""
    from assay.data.datamodule import AssayDataModule, SamplerProgress
    from assay.dynamics.recording import DynamicsOff, LossDynamics
    from assay.module import AssayModule
    from assay.ordering.baselines import RandomOrdering

    model.load_state_dict(model_state)  # every fit starts from the same weights
    rows = np.arange(len(tokenized["train"]))
    dm = AssayDataModule(tokenized, rows, np.zeros(len(rows)), RandomOrdering(seed=0), spec.data.format, spec.data.batch_size, spec.data.eval_batch_size, tokenizer.pad_token_id)
    module = AssayModule(model, tokenizer, spec.objective, spec.optim, spec.eval)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        dynamics = DynamicsOff() if arm == "off" else LossDynamics(flush_every=50)
        callbacks = [SamplerProgress(), *(timed(c, hooks.setdefault(f"{arm}/recorder", [])) for c in dynamics.callbacks(Path(tmp)))]
        if arm.startswith("grads"):
            grads = gradient_recorder(Path(tmp), names, proj_dim, arm.split("-", 1)[1])
            callbacks.append(timed(grads, hooks.setdefault(f"{arm}/gradients", [])))
        _timed_arm.update(arm=arm if arm.startswith("grads") else None, hooks=hooks)
        callbacks.append(timer)
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
            gradient_clip_val=1.0, callbacks=callbacks,
        )
        trainer.fit(module, datamodule=dm)
    return np.diff(timer.marks).tolist()


def loop_grads(model, ds, pad_id: int, names) -> torch.Tensor:
    """One forward + backward per example (batch size 1, as LESS's collect_grad_reps does), the
    gradient taken over ``names`` only."""
    from assay.models.grads import _sample_loss
    from assay.models.passes import padded_batches

    params = dict(model.named_parameters())
    out = []
    model.eval()
    for batch in padded_batches(ds, pad_id, 1, desc="loop"):
        loss = _sample_loss(model, {n: params[n] for n in names}, {}, batch["input_ids"][0], batch["labels"][0])
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        out.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(out)


def vmap_grads(model, ds, pad_id: int, names, batch: int) -> torch.Tensor:
    """The earlier batched path: ``vmap(grad(functional_call))`` over the whole model, --batch rows at a time."""
    from assay.models.grads import per_sample_grads
    from assay.models.passes import padded_batches

    model.eval()
    return torch.cat([per_sample_grads(model, b["input_ids"], b["labels"], names, method="vmap") for b in padded_batches(ds, pad_id, batch, desc="vmap")])


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM; writing 5 to clear_refs, Linux >= 4.0) so the peak
    read after an arm excludes building the model and data; returns the RSS now, in KiB."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return status_kib("VmRSS")


def scoring_arm(kind: str, batch: int, examples: int, repeats: int) -> None:
    """One scoring arm in a fresh process: peak RSS above the built model and data is that arm's."""
    from assay.models.grads import grad_param_names, gradient_features

    spec, model, tokenizer, tokenized = build(["data.max_train_examples=2000"])
    names = grad_param_names(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)  # both arms: gradients over the same layer, other weights frozen
    ds, pad = tokenized["train"].select(range(examples)), tokenizer.pad_token_id
    base_kib = reset_peak_rss()

    def go(d):
        if kind == "loop":
            return loop_grads(model, d, pad, names)
        if kind == "vmap":
            return vmap_grads(model, d, pad, names, batch)
        return gradient_features(model, d, pad, names, batch)

    go(ds.select(range(min(batch, examples))))  # warm-up (vmap tracing, allocator)
    times, g = [], None
    for _ in range(repeats):
        g = None  # the previous run's result is not part of this run's peak
        t = time.perf_counter()
        g = go(ds)
        times.append(time.perf_counter() - t)
    elapsed = float(np.median(times))
    peak_kib = status_kib("VmHWM")
    path = Path(tempfile.gettempdir()) / f"dynamics_overhead_{kind}_{batch}_{os.getpid()}.pt"
    torch.save(g, path)
    print(json.dumps({"s": round(elapsed, 3), "s_all": [round(x, 3) for x in times], "peak_mib": round((peak_kib - base_kib) / 1024, 1), "file": str(path)}))


def fidelity(g: torch.Tensor, proj_dim: int, kinds, seeds: int) -> dict:
    """Per projection kind: seconds to project ``g`` (median over seeds) and the mean absolute error
    of its pairwise cosine similarities against the exact gradients' (off-diagonal pairs)."""
    from assay.models.projection import project

    exact = torch.nn.functional.normalize(g.double(), dim=1)
    exact = exact @ exact.T
    off = ~torch.eye(len(g), dtype=torch.bool)
    out = {}
    for kind in kinds:
        project(g[:2], proj_dim, seed=0, kind=kind)  # warm-up
        secs, errs = [], []
        for seed in range(seeds):
            t = time.perf_counter()
            p = project(g, proj_dim, seed=seed, kind=kind)
            secs.append(time.perf_counter() - t)
            c = torch.nn.functional.normalize(p.double(), dim=1)
            errs.append(float((c @ c.T - exact)[off].abs().mean()))
        out[kind] = {"s": round(float(np.median(secs)), 4), "cos_mae": round(float(np.mean(errs)), 5), "cos_mae_sd": round(float(np.std(errs)), 5)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per fit (off, losses)")
    ap.add_argument("--grad-steps", type=int, default=12, help="optimizer steps per fit of the grads arm (seconds a step)")
    ap.add_argument("--skip", type=int, default=5, help="first steps of each fit left out (warm-up)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--proj-dim", type=int, default=1024)
    ap.add_argument("--projections", nargs="+", default=["sjlt", "rademacher"], help="projection kinds of the grads arms")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per scoring arm (median reported)")
    ap.add_argument("--fidelity-seeds", type=int, default=5)
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 32], help="batched sizes (8 = the gradient scorers' default)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scoring-arm", choices=["loop", "batched", "vmap"], help=argparse.SUPPRESS)
    ap.add_argument("--scoring-batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.scoring_arm:
        return scoring_arm(args.scoring_arm, args.scoring_batch, args.examples, args.repeats)
    from assay.models.grads import grad_param_names

    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    spec, model, tokenizer, tokenized = build(["data.max_train_examples=2000"])
    names = grad_param_names(model)
    n_params = sum(p.numel() for p in model.parameters())
    d_grad = sum(dict(model.named_parameters())[n].numel() for n in names)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    # ---- part 1: step time ----
    steps: dict[str, list[float]] = {"off": [], "losses": [], **{f"grads-{k}": [] for k in args.projections}}
    hooks: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for arm in steps:
            n = args.grad_steps if arm.startswith("grads") else args.steps
            steps[arm] += fit_steps(arm, spec, state, model, tokenizer, tokenized, n, names, args.proj_dim, hooks)[args.skip :]
            print(f"round {r} {arm}: median step {np.median(steps[arm]) * 1e3:.1f} ms", flush=True)
    med = {arm: float(np.median(v)) for arm, v in steps.items()}

    # ---- part 2: batched vs per-example per-sample gradients, each arm in its own process ----
    arms = [("loop", 1)] + [("batched", bs) for bs in args.batch] + [("vmap", bs) for bs in args.batch]
    runs = {}
    for kind, bs in arms:
        cmd = [sys.executable, __file__, "--scoring-arm", kind, "--scoring-batch", str(bs), "--examples", str(args.examples), "--threads", str(args.threads), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        runs[(kind, bs)] = json.loads(out)
        print(f"{kind} batch {bs}: {runs[(kind, bs)]['s']:.3f} s, peak +{runs[(kind, bs)]['peak_mib']} MiB", flush=True)
    loop = runs[("loop", 1)]
    reference = torch.load(loop["file"])
    scoring = {"examples": args.examples, "loop_s": loop["s"], "loop_s_all": loop["s_all"], "loop_peak_mib": loop["peak_mib"], "batched": []}
    for kind, bs in arms[1:]:
        r = runs[(kind, bs)]
        agree = float((torch.load(r["file"]) - reference).abs().max() / reference.abs().max())
        scoring["batched"].append({"method": "taps" if kind == "batched" else kind, "batch": bs, "s": r["s"], "s_all": r["s_all"], "speedup": round(loop["s"] / r["s"], 2), "peak_mib": r["peak_mib"], "max_rel_diff": agree})

    # ---- part 3: projection cost and fidelity on the loop's exact gradients ----
    torch.set_num_threads(args.threads)
    proj = fidelity(reference, args.proj_dim, args.projections, args.fidelity_seeds)
    for f in (runs[a]["file"] for a in arms):
        Path(f).unlink(missing_ok=True)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    results = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads, "uptime_before": uptime_before, "uptime_after": uptime_after},
        "model": {"params": n_params, "grad_params": d_grad, "grad_param_names": len(names), "batch_size": spec.data.batch_size},
        "args": vars(args),
        "step_ms": {arm: round(v * 1e3, 2) for arm, v in med.items()},
        "step_ms_p10_p90": {arm: [round(float(np.percentile(v, q)) * 1e3, 2) for q in (10, 90)] for arm, v in steps.items()},
        "losses_overhead_pct": round((med["losses"] / med["off"] - 1) * 100, 2),
        "callback_ms_median": {k: round(float(np.median(v)) * 1e3, 3) for k, v in hooks.items()},
        "losses_recorder_pct_of_off_step": round(float(np.median(hooks["losses/recorder"])) / med["off"] * 100, 2),
        "grads_multiple": {arm: round(med[arm] / med["off"], 2) for arm in med if arm.startswith("grads")},
        "scoring": scoring,
        "projection": {"proj_dim": args.proj_dim, "rows": args.examples, "seeds": args.fidelity_seeds, **proj},
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    s = results["scoring"]
    print(json.dumps(results, indent=2))
    print()
    cb = results["callback_ms_median"]
    print("| configuration | step time (ms) | vs dynamics off |")
    print("|---|---:|---:|")
    print(f"| dynamics off | {results['step_ms']['off']} | 1.00x |")
    print(f"| losses + confidence recorded | {results['step_ms']['losses']} | {results['losses_overhead_pct']:+}% (target <= 5%; the recorder itself takes {cb['losses/recorder']} ms/step) |")
    for k in args.projections:
        arm = f"grads-{k}"
        print(f"| projected per-sample gradients, {k} (k = {args.proj_dim}) | {results['step_ms'][arm]} | {results['grads_multiple'][arm]}x ({cb[arm + '/per_sample_grads']} ms per-sample gradients + {cb[arm + '/projection']} ms projection) |")
    print()
    print(f"| scoring {args.examples} examples | time (s) | speed-up vs loop | peak memory (MiB) | max relative difference to loop |")
    print("|---|---:|---:|---:|---:|")
    print(f"| one backward per example | {s['loop_s']} | 1.00x | +{s['loop_peak_mib']} | - |")
    for b in s["batched"]:
        label = "batched, module taps" if b["method"] == "taps" else "batched, vmap (earlier path)"
        print(f"| {label}, batch {b['batch']} | {b['s']} | {b['speedup']}x | +{b['peak_mib']} | {b['max_rel_diff']:.1e} |")
    print()
    p = results["projection"]
    print(f"| projection to k = {p['proj_dim']} of {p['rows']} exact gradients (D = {d_grad}) | time (ms) | cosine-similarity error (mean abs., {p['seeds']} seeds) |")
    print("|---|---:|---:|")
    for k in args.projections:
        print(f"| {k} | {p[k]['s'] * 1e3:.1f} | {p[k]['cos_mae']:.4f} ± {p[k]['cos_mae_sd']:.4f} |")


if __name__ == "__main__":
    main()
