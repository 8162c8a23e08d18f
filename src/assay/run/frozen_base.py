"""Checkpoints of a LoRA run hold what training changes: the adapter, the optimizer state and the
run's own state, not the frozen base weights.

A LoRA adapter of SmolLM2-135M is about 5 MB, its base about 540 MB in float32: a checkpoint that
copied the base made every LoRA run cost a gigabyte or more on disk. The base is instead rebuilt
from the run's config when it resumes (the same Hub id, path, earlier run or seeded initialisation)
and its identity is checked: the checkpoint carries a fingerprint of the frozen weights (a BLAKE2
digest of every frozen tensor's name, dtype, shape and bytes), and a resume whose rebuilt base
differs is refused with one line instead of training an adapter on other weights.

Runs without frozen parameters (full fine-tuning) are saved exactly as before.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from assay.errors import UserError

MARKER = "assay_frozen_base"
"""Checkpoint entry of a run whose frozen base weights were left out: ``{"fingerprint", "keys"}``."""

PREFIX = "model."
"""The policy's parameters in the LightningModule's state dict (``AssayModule.model``)."""


def frozen_keys(module: Any) -> list[str]:
    """State-dict keys of the policy's frozen parameters, where it is a peft model (LoRA); [] otherwise
    (a fully trained model, or a frozen module outside the policy such as TR-DPO's live reference,
    which training changes and every checkpoint keeps)."""
    model = getattr(module, "model", None)
    if model is None or not hasattr(model, "peft_config"):
        return []
    # state_dict, not named_parameters: a tied weight (lm_head = embed_tokens) is one parameter, two keys
    return [PREFIX + name for name, p in model.state_dict(keep_vars=True).items()
            if isinstance(p, torch.nn.Parameter) and not p.requires_grad]


def fingerprint(module: Any, keys: list[str]) -> str:
    """BLAKE2 digest of the frozen tensors (computed once per process: they never change)."""
    cached = getattr(module, "_frozen_base_fingerprint", None)
    if cached is not None and cached[0] == tuple(keys):
        return cached[1]
    params = module.model.state_dict(keep_vars=True)
    digest = hashlib.blake2b(digest_size=16)
    for key in keys:
        t = params[key[len(PREFIX):]].detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    value = digest.hexdigest()
    object.__setattr__(module, "_frozen_base_fingerprint", (tuple(keys), value))
    return value


def drop_frozen(module: Any, checkpoint: dict) -> None:
    """Leave the frozen base weights out of ``checkpoint`` (a LoRA run); record their fingerprint."""
    keys = [k for k in frozen_keys(module) if k in checkpoint.get("state_dict", {})]
    if not keys:
        return
    for key in keys:
        del checkpoint["state_dict"][key]
    checkpoint[MARKER] = {"fingerprint": fingerprint(module, keys), "keys": len(keys)}


def restore_frozen(module: Any, checkpoint: dict, where: str = "ckpt_path") -> None:
    """Put this run's frozen base weights back into a checkpoint that left them out, after checking
    they are the weights it was trained on."""
    saved = checkpoint.get(MARKER)
    if saved is None:
        return
    keys = frozen_keys(module)
    if len(keys) != saved["keys"] or fingerprint(module, keys) != saved["fingerprint"]:
        raise UserError(where, "last", "the checkpoint's LoRA adapter was trained on other base weights than the ones this config "
                        f"builds ({saved['keys']} frozen tensors there, {len(keys)} here, or the same tensors with other values); "
                        "resume with the model config the run was trained with")
    state = module.state_dict()
    for key in keys:
        checkpoint["state_dict"][key] = state[key]
    del checkpoint[MARKER]


def left_out(checkpoint: dict) -> bool:
    """Whether a checkpoint left the frozen base weights out (a LoRA run's)."""
    return isinstance(checkpoint, dict) and MARKER in checkpoint
