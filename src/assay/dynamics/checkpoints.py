"""Checkpoints of an earlier (warm-up) stage, as the TracIn-CP sums of LESS, CLUES and LQS read them:
the checkpoints in training order, each one's weights, learning rate and Adam moments, and the
learning-rate weights of the sum."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from assay.errors import UserError
from assay.lazy import torch


def in_training_order(paths: Sequence[Path]) -> list[Path]:
    """Checkpoints by optimizer step (``...step=<n>.ckpt``; a plain sort of unpadded names puts
    step=12 before step=6). Names without a step keep their sorted place, at the end."""

    def step(path: Path) -> float:
        found = re.search(r"step=(\d+)", path.name)
        return int(found.group(1)) if found else float("inf")

    return sorted(paths, key=lambda p: (step(p), p.name))


def stage_checkpoints(run_dir: str | Path) -> list[Path]:
    """The intermediate checkpoints of a stage in training order (``last.ckpt`` only when there is
    nothing else)."""
    root = Path(run_dir) / "checkpoints"
    found = in_training_order([p for p in root.glob("*.ckpt") if p.name != "last.ckpt"])
    if not found and (root / "last.ckpt").is_file():
        found = [root / "last.ckpt"]
    if not found:
        raise UserError("selection.dynamics_from", str(run_dir), f"has no checkpoints under {root}; the warm-up stage must save them")
    return found


def load_checkpoint(model: torch.nn.Module, path: Path, names: Sequence[str]) -> tuple[float, Optional[tuple[torch.Tensor, torch.Tensor]]]:
    """Load a Lightning checkpoint's weights into ``model``; return its learning rate and the Adam
    moments of ``names`` (flattened, in order), or None when the optimizer state lacks them."""
    # weights_only: a checkpoint is read as tensors and plain values, never unpickled as arbitrary
    # objects, so a ``dynamics_from`` directory cannot run code on this machine.
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else "not tensors and plain values"
        raise UserError("selection.dynamics_from", str(path), f"checkpoint refused: it holds more than tensors and plain values ({reason})") from None
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
