"""What runs on one party, with no Flower in sight: a client's local training (the project's
objective and collation in a short loop), the trainable state that travels, scoring checkpoints in
the format the gradient scorers read, adapter merging, and evaluation through ``AssayModule``."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

MOMENT_PREFIX = ("exp_avg::", "exp_avg_sq::")
"""Keys of the Adam moments travelling next to the weights in a warm-up reply (one ArrayRecord, as
Flower's FedAvg expects, averaged by example count like the weights)."""


def trainable_names(model: torch.nn.Module) -> list[str]:
    """The parameters that train and travel: the LoRA adapters under PEFT, else every weight."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def trainable_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().cpu().numpy().copy() for n in trainable_names(model)}


def load_trainable(model: torch.nn.Module, arrays: dict[str, np.ndarray]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in trainable_names(model) if n not in arrays]
    if missing:
        raise ValueError(f"the global state lacks {len(missing)} trainable parameters (e.g. {missing[:2]})")
    with torch.no_grad():
        for n in trainable_names(model):
            params[n].copy_(torch.as_tensor(np.asarray(arrays[n]), dtype=params[n].dtype))


def client_memory_bytes(model: torch.nn.Module) -> int:
    """Bytes a client needs to train ``model`` with AdamW, counted (not measured): every parameter,
    plus a gradient and the two Adam moments of each trainable one. Activations are left out: they
    grow with batch and length alike under every rule."""
    params = list({id(p): p for p in model.parameters()}.values())
    return int(sum(p.numel() * p.element_size() for p in params) + 3 * sum(p.numel() * p.element_size() for p in params if p.requires_grad))


def split_moments(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Weights, first and second Adam moments out of one averaged record."""
    m_key, v_key = MOMENT_PREFIX
    weights = {k: v for k, v in arrays.items() if not k.startswith(MOMENT_PREFIX)}
    m = {k[len(m_key):]: v for k, v in arrays.items() if k.startswith(m_key)}
    v = {k[len(v_key):]: a for k, a in arrays.items() if k.startswith(v_key)}
    return weights, m, v


def local_train(model, tokenizer, ds, rows: np.ndarray, objective, optim, data, steps: int, seed: int, clip: Optional[float] = 1.0, schedule: str = "constant",
                penalty: Optional[Callable[[], torch.Tensor]] = None) -> dict[str, Any]:
    """``steps`` AdamW steps on ``rows`` of the tokenized ``ds`` (shuffled with ``seed``, cycled):
    the forward / per-sample loss / aggregation of ``AssayModule.training_step``, the optimizer and
    schedule of ``AssayModule.configure_optimizers`` (``schedule`` over the local steps, no warm-up),
    ``penalty()`` added to the loss where given (a rule's regulariser). Returns the mean objective loss,
    the mean learning rate and the Adam moments of every trainable parameter."""
    from torch.utils.data import DataLoader, SubsetRandomSampler

    from assay.data.collate import Collator
    from assay.data.datamodule import Rows
    from assay.module import lr_multiplier

    names = trainable_names(model)
    params = dict(model.named_parameters())
    trainable = [params[n] for n in names]
    opt = torch.optim.AdamW(trainable, lr=optim.lr, weight_decay=optim.weight_decay, betas=tuple(optim.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(schedule, 0, steps))
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        Rows(ds), batch_size=data.batch_size, sampler=SubsetRandomSampler(np.asarray(rows).tolist(), generator=generator),
        collate_fn=Collator(tokenizer.pad_token_id, data.format, with_generation=False, **objective.collation),
    )
    controller = objective.build_controller()
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    model.train()
    losses, lrs = [], []
    for _ in range(steps):
        batch = next(batches)
        loss = objective.aggregate(objective.compute(model, batch, training=True, controller=controller))
        opt.zero_grad(set_to_none=True)
        (loss + penalty() if penalty is not None else loss).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(trainable, clip)
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    moments = {}
    for n, p in zip(names, trainable):
        state = opt.state.get(p, {})
        zeros = np.zeros(tuple(p.shape), dtype=np.float32)
        moments[MOMENT_PREFIX[0] + n] = state["exp_avg"].cpu().numpy() if "exp_avg" in state else zeros
        moments[MOMENT_PREFIX[1] + n] = state["exp_avg_sq"].cpu().numpy() if "exp_avg_sq" in state else zeros
    return {"loss": float(np.mean(losses)), "lr": float(np.mean(lrs)), "moments": moments}


def write_checkpoint(directory: Path, index: int, model, weights: dict[str, np.ndarray], m: dict, v: dict, lr: float) -> Path:
    """One scoring checkpoint as ``checkpoints/step=<index>.ckpt`` in the layout of a Lightning
    checkpoint that ``assay.dynamics.checkpoints.load_checkpoint`` reads (weights under ``model.``,
    the optimizer's Adam moments by trainable-parameter index, the learning rate), so CLUES and LESS
    sum over federated checkpoints exactly as over a warm-up stage's."""
    names = trainable_names(model)
    state = {i: {"exp_avg": torch.as_tensor(m[n]), "exp_avg_sq": torch.as_tensor(v[n])} for i, n in enumerate(names) if n in m and n in v}
    ckpt = {
        "state_dict": {f"model.{n}": torch.as_tensor(weights[n]) for n in names},
        "lr_schedulers": [{"_last_lr": [float(lr)]}],
        "optimizer_states": [{"state": state}],
    }
    path = Path(directory) / "checkpoints" / f"step={index:06d}.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def anchor_threshold(anchor_scores: np.ndarray, quantile: float) -> float:
    """CLUES's global threshold: the ``quantile`` of the trusted anchors' scores, the same definition
    as the single-site ``anchor_quantile`` rule (:meth:`AnchorQuantile.threshold_of`): NaN =
    unscorable, ranked lowest (-inf); numpy's linear interpolation between finite neighbours, and
    -inf (never NaN) where it would interpolate towards an unscorable anchor, so the clients then
    keep everything rather than nothing."""
    from assay.selection.selectors import AnchorQuantile

    return AnchorQuantile.threshold_of(np.asarray(anchor_scores, dtype=np.float64), quantile)


def merge_weights(k: int, method: str) -> list[float]:
    """Equal weights, chosen so that merging K identical adapters gives that adapter back. PEFT
    combines the A and the B matrices separately with sqrt(weight x scaling) each: ``linear`` sums
    them, so its product is (sum_k sqrt(w))^2 BA and w = 1/K^2 (mean A times mean B); ``ties`` takes
    a disjoint *mean* of the sign-agreeing entries, so w = 1."""
    return [1.0 / k**2] * k if method == "linear" else [1.0] * k


def merge_adapters(model, states: Sequence[dict[str, np.ndarray]], method: str, density: float) -> None:
    """Merge the clients' LoRA adapters into the model's active adapter with PEFT's
    ``add_weighted_adapter`` (``linear``, or ``ties`` at ``density``, CLUES's merge), equal weights."""
    weights = merge_weights(len(states), method)
    active = model.active_adapter
    config = model.peft_config[active]
    names = []
    for k, state in enumerate(states):
        name = f"client{k}"
        model.add_adapter(name, config)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key, value in state.items():
                params[key.replace(f".{active}.", f".{name}.")].copy_(torch.as_tensor(value))
        names.append(name)
    kwargs = {"density": density, "majority_sign_method": "total"} if method == "ties" else {}
    model.add_weighted_adapter(names, list(map(float, weights)), "merged", combination_type=method, **kwargs)
    merged = {n: p.detach().clone() for n, p in model.named_parameters() if ".merged." in n}
    params = dict(model.named_parameters())
    # PEFT folds each adapter's scaling (alpha / r) into the merged A and B and gives the merged
    # adapter alpha = r (scaling 1); copied back into the active adapter, B is divided by its scaling.
    scaling = config.lora_alpha / config.r
    with torch.no_grad():
        for n, value in merged.items():
            params[n.replace(".merged.", f".{active}.")].copy_(value / scaling if "lora_B" in n else value)
    for name in names + ["merged"]:
        model.delete_adapter(name)
    model.set_adapter(active)
    for n, p in model.named_parameters():  # PEFT re-freezes on adapter changes: the active one trains
        p.requires_grad_(f".{active}." in n and "lora_" in n)


def evaluate(model, tokenizer, objective, optim, eval_cfg, data, ds, split: str) -> dict[str, float]:
    """Held-out loss and exact match (overall and per source) of ``model`` on a tokenized split,
    through ``AssayModule``'s own evaluation step."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from assay.data.collate import Collator
    from assay.data.datamodule import Rows
    from assay.module import AssayModule

    module = AssayModule(model, tokenizer, objective, optim, eval_cfg)
    loader = DataLoader(Rows(ds), batch_size=data.eval_batch_size, shuffle=False,
                        collate_fn=Collator(tokenizer.pad_token_id, data.format, with_generation=True, **objective.collation))
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    was_training = model.training
    if split == "test":
        out = trainer.test(module, dataloaders=loader, verbose=False)[0]
    else:
        module.evaluation = type(eval_cfg)(**{**eval_cfg.__dict__, "val_generate": True})
        out = trainer.validate(module, dataloaders=loader, verbose=False)[0]
    model.train(was_training)
    return {k: float(v) for k, v in out.items()}
