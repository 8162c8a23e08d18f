"""Skill-it's skills graph learned from training (Chen et al. 2023, arXiv 2307.14430), cached per
starting model.

The authors learn the graph A (rows: the skill trained on, columns: the skill evaluated) from training
runs: train on skill i alone for a short run from the model Skill-it will start from, evaluate every
skill j's validation loss before and after, and set

    A_ij = max(0, (L_j(θ_0) − L_j(θ_h^i)) / L_j(θ_0))

where θ_0 is the starting model and θ_h^i the model after h optimizer steps on skill i's training
examples only. The entry is the *relative* decrease of skill j's loss (normalised by its loss at the
start), clipped at 0 (training on i that raises j's loss is no edge), and the diagonal is measured like
every other entry (A_ii = how much the skill's own training lowers its loss; not set to 1).

Where this was checked (the Skill-it repository says "Code for learning the skills graph is not
provided", HazyResearch/skill-it README.md):

* the normalisation and the measured diagonal: HazyResearch/aioli ``mixing_law_fitting.py``
  ``skills_graph`` (the same first author's released code that learns Skill-it's graph:
  ``A[i] = (start_loss - end_loss) / start_loss`` from one run per skill, ``scripts/*/skillit/
  graph_learning.sh``), and the graphs it produced (``skillit_graphs/*_normalized_seed_*.npy``:
  entries in (0, 1), diagonal 0.64-0.76). Aioli reads the losses of its test split; here they are
  the validation batches Skill-it's updates read (``probe_examples`` per skill);
* the clipping at 0: the learned graphs released with Skill-it (``ni_graphs/spanish_qg_normalized.npy``,
  ``ni_graphs/stance_detection.npy``) hold exact zeros off the diagonal, which a loss difference only
  gives when non-positive changes are set to 0. Whether the authors clipped at 0 or thresholded small
  decreases too is not in any released file (not verified);
* the short run: Aioli's graph runs are runs of their own, one per skill from the same initial model,
  with the main runs' optimizer settings and schedule (warm-up steps included) and a length of
  T/(2k) for a T-step main run over k skills (``skills_graph(end=2857)`` reads runs named with
  ``max_steps`` 2,857 = 40,000 / 14, k = 7); here ``graph_steps`` optimizer steps, from the run's own
  starting model.

The paper's text (Section 2-3 and the graph-learning appendix) could not be read in this session; the
definition above follows the authors' released code and graphs, not a re-read of the appendix.

The cheaper first-order probe (``assay.mixing.skill_it.graph_from_gradients``, ``mixture.graph_estimate=
gradient_probe``) is not the authors' estimate.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import numpy as np

FORMULA = "relative_decrease_clipped_v1"
"""Names the definition of A_ij above; part of the cache key, so a change of the formula never reads an
old graph."""


def graph_from_losses(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """A_ij = max(0, (before_j − after_ij) / before_j).

    ``before[j]``: skill j's validation loss at the starting model; ``after[i, j]``: skill j's validation
    loss after the short run on skill i. A skill whose starting loss is not positive (nothing to
    decrease) has no incoming edge."""
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    if after.shape != (len(before), len(before)):
        raise ValueError(f"after must be {len(before)}x{len(before)} (one row per trained skill), got {after.shape}")
    scale = np.where(before > 0, before, np.inf)
    return np.clip((before[None, :] - after) / scale[None, :], 0.0, None)


@dataclass(frozen=True)
class ShortRun:
    """The short run on one skill: a run of its own of ``steps`` optimizer steps with the main run's
    optimizer (AdamW, ``assay.module.configure_optimizers``: learning rate, betas, weight decay), gradient
    clipping and learning-rate schedule with its warm-up steps, over ``steps`` (``total_steps``), as
    Aioli's graph runs share the main runs' settings (``--lr 0.0005 --lr_scheduler linear_warmup_cosine
    --warmup_steps 500``) with a run length of their own."""

    steps: int
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    schedule: str
    warmup_steps: int
    total_steps: int
    gradient_clip: Optional[float]
    seed: int = 0
    """Seeds the random state of the short runs (dropout), forked from the run's: the run's own random
    state is the same whether the graph was estimated or read from the cache."""

    @classmethod
    def of(cls, spec, steps: int) -> "ShortRun":
        optim, trainer = spec.optim, spec.trainer
        return cls(steps=int(steps), lr=float(optim.lr), betas=(float(optim.betas[0]), float(optim.betas[1])), weight_decay=float(optim.weight_decay),
                   schedule=str(optim.schedule), warmup_steps=int(optim.warmup_steps), total_steps=int(steps),
                   gradient_clip=None if trainer.gradient_clip_val is None else float(trainer.gradient_clip_val))


def skill_batches(split, domain: str, steps: int, batch_size: int, pad_id: int, fmt: str, collation: dict, seed: int = 0) -> list[dict]:
    """``steps`` full training batches of ``domain`` alone: its rows of ``split`` in a seeded order,
    repeated (epochs) as often as ``steps × batch_size`` needs, collated as the run's training batches
    (``assay.mixing.callbacks.domain_batches`` with the training batch size, no generation fields)."""
    from assay.mixing.callbacks import domain_batches

    rows = np.flatnonzero(np.asarray(split["source"]) == domain)
    if len(rows) == 0 or steps <= 0:
        return []
    order = rows[np.random.default_rng(seed).permutation(len(rows))]
    need = steps * batch_size
    picked = np.resize(order, need).tolist()  # cycles through the domain's rows
    data = SimpleNamespace(format=fmt, eval_batch_size=batch_size)
    return domain_batches(split.select(picked), [domain], need, pad_id, data, collation, False)


def _to(batch: dict, device) -> dict:
    import torch

    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def lr_factor(step: int, schedule: str, warmup: int, total: int) -> float:
    """The learning-rate multiplier of step t, the same values as ``assay.module.lr_multiplier`` (which
    this layer may not import; a test compares the two): linear warm-up over ``warmup`` steps, then
    constant, linear decay or cosine decay to 0 at ``total``; ``constant`` has no warm-up."""
    if schedule == "constant":
        return 1.0
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant_with_warmup":
        return 1.0
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_copy(module, batches: list[dict], run: ShortRun):
    """A copy of ``module`` (model, objective, controller) whose model is a deep copy of ``module.model``
    trained for ``run.steps`` optimizer steps on ``batches`` (one batch a step, cycled), with the run's
    optimizer and schedule and gradient clipping. ``module.model`` itself is not touched."""
    import torch

    model = copy.deepcopy(module.model)
    controller = copy.deepcopy(getattr(module, "controller", None))
    clone = SimpleNamespace(model=model, objective=module.objective, controller=controller, device=module.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=run.lr, weight_decay=run.weight_decay, betas=run.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, run.schedule, run.warmup_steps, run.total_steps))
    model.train()
    with torch.enable_grad():
        for step in range(run.steps if batches else 0):
            batch = _to(batches[step % len(batches)], module.device)
            out = module.objective.compute(model, batch, training=True, controller=controller)
            loss = module.objective.aggregate(out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if run.gradient_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, run.gradient_clip)
            opt.step()
            sched.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    return clone


def estimate_graph(module, domains: list[str], train: dict[str, list[dict]], val: list[dict], run: ShortRun,
                   losses: Optional[Callable] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, before, after): every skill's validation loss at ``module``'s model (``before``, [k]), after
    the short run on each skill i (``after[i]``, [k]), and A from them (``graph_from_losses``)."""
    import torch

    from assay.mixing.callbacks import domain_losses

    losses = losses or domain_losses
    device = torch.device(module.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    before = np.asarray(losses(module, val, domains), dtype=np.float64)
    after = np.zeros((len(domains), len(domains)))
    with torch.random.fork_rng(devices=devices):
        for i, d in enumerate(domains):
            torch.manual_seed(run.seed + i)
            trained = train_copy(module, train.get(d, []), run)
            after[i] = losses(trained, val, domains)
            del trained
    return graph_from_losses(before, after), before, after


def data_digest(batches: list[dict]) -> str:
    """A digest of collated batches: every tensor's bytes and every other field's text, in order."""
    import torch

    h = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            v = batch[key]
            h.update(key.encode())
            if torch.is_tensor(v):
                h.update(str(v.dtype).encode() + str(tuple(v.shape)).encode())
                h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(v).encode())
    return h.hexdigest()


def graph_key(model, objective, domains: list[str], run: ShortRun, train: dict[str, list[dict]], val: list[dict]) -> str:
    """The cache key: the starting model's weights (``weights_digest``), the objective (the loss), the
    domains, the short run's settings, the formula and the digest of the batches trained and evaluated on."""
    from assay.objectives.reference import weights_digest

    h = hashlib.sha256(weights_digest(model).encode())
    h.update(repr(objective).encode())
    h.update(json.dumps({"domains": list(domains), "run": asdict(run), "formula": FORMULA}, sort_keys=True).encode())
    for d in domains:
        h.update(d.encode() + data_digest(train.get(d, [])).encode())
    h.update(data_digest(val).encode())
    return h.hexdigest()[:32]


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "skill_graphs" / f"{key}.json"


def _read(path: Path, domains: list[str]) -> Optional[dict]:
    try:
        saved = json.loads(path.read_text())
        graph = np.asarray(saved["graph"], dtype=np.float64)
        if saved.get("domains") != list(domains) or graph.shape != (len(domains), len(domains)) or not np.isfinite(graph).all() or (graph < 0).any():
            raise ValueError("not a graph over these domains")
        return saved
    except FileNotFoundError:
        return None
    except Exception as e:  # a truncated or foreign file: estimate again and overwrite it
        from assay.run import log as runlog

        runlog.info("Skill-it graph cache %s is unreadable (%s: %s); estimating the graph again", path, type(e).__name__, str(e)[:120])
        return None


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def learned_graph(module, domains: list[str], train: dict[str, list[dict]], val: list[dict], run: ShortRun,
                  cache_dir: Optional[Path]) -> tuple[np.ndarray, dict[str, Any]]:
    """The graph of ``module``'s current model (the run's starting model), read from
    ``<cache_dir>/skill_graphs/<key>.json`` when an estimate with the same key is there, else estimated
    (``estimate_graph``) and written there (by the main process). Returns (A, what to report)."""
    from assay.run import distributed, log as runlog

    key = graph_key(module.model, module.objective, domains, run, train, val)
    path = cache_path(cache_dir, key) if cache_dir is not None else None
    saved = _read(path, domains) if path is not None else None
    if saved is not None:
        runlog.info("Skill-it graph: reused the estimate of this starting model from %s (no short runs)", path)
        graph = np.asarray(saved["graph"], dtype=np.float64)
        before, after = np.asarray(saved["before"]), np.asarray(saved["after"])
    else:
        started = time.perf_counter()
        graph, before, after = estimate_graph(module, domains, train, val, run)
        runlog.info("Skill-it graph: estimated from %d short runs of %d steps (one per skill) in %.1f s%s", len(domains), run.steps,
                    time.perf_counter() - started, f"; cached at {path}" if path is not None else "")
        if path is not None and distributed.is_main():
            _write(path, {"estimate": "training", "formula": FORMULA, "key": key, "domains": list(domains), "graph": graph.tolist(),
                          "before": before.tolist(), "after": after.tolist(), "run": asdict(run)})
    info = {"estimate": "training", "graph_steps": run.steps, "key": key,
            "loss_before": dict(zip(domains, np.asarray(before, dtype=np.float64).tolist())),
            "loss_after": {d: dict(zip(domains, row)) for d, row in zip(domains, np.asarray(after, dtype=np.float64).tolist())}}
    return graph, info


def training_probe(spec, mixture, mixer, train_split, domains: list[str], val: list[dict], pad_id: int, cache_dir: Optional[Path]) -> Callable:
    """What ``OnlineMixing`` calls at the start of training (``assay.mixing.run._online``): the graph of
    the run's starting model from ``mixture.graph_steps`` steps on each skill's training batches, cached;
    what the estimate reports goes to ``mixer.graph_info`` (mixing.json, the checkpoint)."""
    run = ShortRun.of(spec, mixture.graph_steps)
    train = {d: skill_batches(train_split, d, run.steps, spec.data.batch_size, pad_id, spec.data.format, spec.objective.collation) for d in domains}

    def probe(module) -> np.ndarray:
        graph, mixer.graph_info = learned_graph(module, domains, train, val, run, cache_dir)
        return graph

    return probe
