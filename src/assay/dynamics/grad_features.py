"""Per-sample gradient features: batched per-sample gradients (torch.func), Adam preconditioning, and
a seeded Rademacher random projection; the shared primitives of GraNd, LESS and CLUES.

Per-sample gradients come from ``vmap(grad(loss))`` over a batch, one vectorised backward per batch
rather than one per example (LESS issue #42 computes them at batch size 1). The gradient is taken
over a parameter subset only: LoRA adapters when the model has them, else named modules.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from assay.data.collate import IGNORE
from assay.errors import UserError


def grad_param_names(model: torch.nn.Module, patterns: Sequence[str] = ()) -> list[str]:
    """Parameters the features are taken over: names containing any of ``patterns``; with no
    patterns, the LoRA adapters when present (CLUES / LESS), else the last decoder layer."""
    names = [n for n, _ in model.named_parameters()]
    if patterns:
        chosen = [n for n in names if any(p in n for p in patterns)]
        if not chosen:
            raise UserError("selection.params", list(patterns), f"match no parameter of the model (e.g. {names[:4]})")
        return chosen
    lora = [n for n in names if "lora_" in n]
    if lora:
        return lora
    layers = sorted({int(n.split("layers.")[1].split(".")[0]) for n in names if "layers." in n})
    if not layers:
        return [n for n, p in model.named_parameters() if p.requires_grad]
    return [n for n in names if f"layers.{layers[-1]}." in n]


def _sample_loss(model, params, frozen, input_ids, labels):
    """Mean NLL of one right-padded row over its labelled (response) tokens. No attention mask is
    needed: with right padding and causal attention, real tokens never attend to the padding."""
    out = functional_call(model, {**frozen, **params}, args=(), kwargs={"input_ids": input_ids.unsqueeze(0), "use_cache": False})
    logits = out.logits[0, :-1].float()
    targets = labels[1:]
    mask = (targets != IGNORE).float()
    nll = F.cross_entropy(logits, targets.clamp(min=0), reduction="none")
    return (nll * mask).sum() / mask.sum().clamp(min=1)


def per_sample_grads(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """[B, D] flattened per-sample gradients over ``names`` (in that order), one vmap per batch."""
    all_params = dict(model.named_parameters())
    params = {n: all_params[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in all_params.items() if n not in params}
    frozen.update(dict(model.named_buffers()))
    g = vmap(grad(lambda p, x, y: _sample_loss(model, p, frozen, x, y)), in_dims=(None, 0, 0), randomness="different")(params, input_ids, labels)
    return torch.cat([g[n].reshape(len(input_ids), -1) for n in names], dim=1)


def adam_precondition(g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, betas=(0.9, 0.999), eps: float = 1e-8) -> torch.Tensor:
    """LESS / CLUES's Adam direction of a gradient from a checkpoint's moments (no bias correction):
    m' = β₁m + (1−β₁)g, v' = β₂v + (1−β₂)g², Γ = m' / sqrt(v' + ε)."""
    m = betas[0] * exp_avg + (1 - betas[0]) * g
    v = betas[1] * exp_avg_sq + (1 - betas[1]) * g**2
    return m / torch.sqrt(v + eps)


def project(g: torch.Tensor, dim: int, seed: int, block: int = 4096) -> torch.Tensor:
    """Seeded Rademacher projection to ``dim`` (TRAK / LESS use d = 8192), scaled by 1/sqrt(dim) so
    inner products are preserved in expectation. The matrix is generated block by block of input
    rows from the seed, so it is never held whole and is the same on every call and every shard."""
    out = torch.zeros(g.shape[0], dim, dtype=torch.float32, device=g.device)
    for start in range(0, g.shape[1], block):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + start)
        rows = min(block, g.shape[1] - start)
        r = torch.randint(0, 2, (rows, dim), generator=gen, dtype=torch.int8).float().mul_(2).sub_(1).to(g.device)
        out += g[:, start : start + rows].float() @ r
    return out / math.sqrt(dim)


def gradient_features(
    model: torch.nn.Module,
    ds,
    pad_id: int,
    names: Sequence[str],
    batch_size: int = 8,
    proj_dim: int = 0,
    seed: int = 0,
    adam: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
) -> torch.Tensor:
    """[N, D or proj_dim] per-sample gradient features of ``ds`` (response loss given the prompt),
    Adam-preconditioned when ``adam`` = (exp_avg, exp_avg_sq) flattened over ``names``."""
    from assay.selection.model_scores import padded_batches

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout: features are a function of the weights only
    feats = []
    try:
        for batch in padded_batches(ds, pad_id, batch_size, desc="per-sample gradients"):
            g = per_sample_grads(model, batch["input_ids"].to(device), batch["labels"].to(device), names)
            if adam is not None:
                g = adam_precondition(g, adam[0].to(device), adam[1].to(device))
            feats.append((project(g, proj_dim, seed) if proj_dim else g).detach().cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats)


# ---- checkpoints of an earlier stage --------------------------------------------------------------


def stage_checkpoints(run_dir: str | Path) -> list[Path]:
    """The intermediate checkpoints of a stage (``last.ckpt`` only when there is nothing else)."""
    root = Path(run_dir) / "checkpoints"
    found = sorted(p for p in root.glob("*.ckpt") if p.name != "last.ckpt")
    if not found and (root / "last.ckpt").is_file():
        found = [root / "last.ckpt"]
    if not found:
        raise UserError("selection.dynamics_from", str(run_dir), f"has no checkpoints under {root}; the warm-up stage must save them")
    return found


def load_checkpoint(model: torch.nn.Module, path: Path, names: Sequence[str]) -> tuple[float, Optional[tuple[torch.Tensor, torch.Tensor]]]:
    """Load a Lightning checkpoint's weights into ``model``; return its learning rate and the Adam
    moments of ``names`` (flattened, in order), or None when the optimizer state lacks them."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state, strict=False)
    lr = float(ckpt["lr_schedulers"][0]["_last_lr"][0]) if ckpt.get("lr_schedulers") else 1.0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]  # the optimizer's param order
    opt_state = ckpt.get("optimizer_states", [{}])[0].get("state", {})
    moments_m, moments_v = [], []
    for n in names:
        idx = trainable.index(n) if n in trainable else None
        s = opt_state.get(idx) if idx is not None else None
        if s is None or "exp_avg" not in s:
            return lr, None
        moments_m.append(s["exp_avg"].reshape(-1))
        moments_v.append(s["exp_avg_sq"].reshape(-1))
    return lr, (torch.cat(moments_m), torch.cat(moments_v))


def checkpoint_weights(lrs: Sequence[float]) -> np.ndarray:
    """LESS's checkpoint weights: each checkpoint's learning rate, renormalised to sum to 1."""
    lrs = np.asarray(lrs, dtype=np.float64)
    return lrs / lrs.sum() if lrs.sum() > 0 else np.full(len(lrs), 1.0 / len(lrs))
