"""The probe step: copy a model, take a few optimizer steps on a small set, and read per-example
losses on another set before and after. Forward-INF (``selection=forward_inf``) scores the training
pool with it; the palimpsest reshuffle test (``assay-provenance observe --method reshuffle``) reads
the same per-example losses; MATES (``selection=mates``) takes one step per candidate with a copy of
the live run's optimizer (``optimizer_copy``, ``step_on``) and reads the target set's losses.

Losses are each row's mean NLL over its labelled (response) tokens (``assay.models.grads.row_losses``),
from right-padded ``prompt + response`` batches (``assay.models.passes``), in eval mode (no dropout:
a loss is a function of the weights only).
"""

from __future__ import annotations

import copy
import inspect
from typing import Iterable, Optional

import numpy as np

from assay.lazy import torch
from assay.models.grads import row_losses
from assay.models.passes import eval_mode, forward, model_device

OPTIMIZERS = ("adam", "sgd")


def example_losses(model, batches: Iterable[dict]) -> np.ndarray:
    """[N] mean response NLL of every row of ``batches`` (from ``padded_batches`` / ``pad_rows``), in order."""
    out = []
    device = model_device(model)
    with eval_mode(model):
        for batch in batches:
            out.append(row_losses(forward(model, batch).logits, batch["labels"].to(device)).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def probe_steps(model, batches: list[dict], steps: int, lr: float, optimizer: str = "adam", ascent: bool = False,
                betas: tuple[float, float] = (0.9, 0.999), state: Optional[dict] = None):
    """A deep copy of ``model`` after ``steps`` optimizer steps on the whole of ``batches`` (``model``
    itself is not touched). Every step is one full-batch step: the gradient of the mean row loss over
    all rows of ``batches`` (accumulated over them), then one update of the trainable parameters by
    Adam (``adam``, torch's defaults but ``lr``/``betas``) or plain gradient descent (``sgd``:
    θ ← θ − lr·∇). ``ascent`` climbs the loss instead (unlearning). ``state``: an optimizer state
    dict to start from (e.g. a checkpoint's Adam moments); none = a fresh optimizer. Runs in eval
    mode (dropout off), so the steps are a function of the weights and the data only."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, not {optimizer!r}")
    clone = copy.deepcopy(model)
    params = [p for p in clone.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=betas) if optimizer == "adam" else torch.optim.SGD(params, lr=lr)
    if state is not None:
        opt.load_state_dict(state)
    rows = sum(int(b["input_ids"].shape[0]) for b in batches)
    device = model_device(clone)
    sign = -1.0 if ascent else 1.0
    with eval_mode(clone, grad=True):
        for _ in range(steps if rows else 0):
            opt.zero_grad(set_to_none=True)
            for batch in batches:
                loss = row_losses(forward(clone, batch).logits, batch["labels"].to(device)).sum() / rows
                (sign * loss).backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    return clone


def optimizer_copy(optimizer, model):
    """A copy of a run's ``optimizer`` over ``model``'s trainable parameters (a clone of the run's
    model): the same class and hyper-parameters, the learning rate its schedule has reached, and its
    state (Adam's moments and step counts), deep-copied, so steps of the copy never touch the run's
    own state. The parameters are matched by position, as ``assay.module.configure_optimizers``
    builds its groups from ``model.parameters()`` (trainable ones, in order)."""
    params = [p for p in model.parameters() if p.requires_grad]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if sum(sizes) != len(params):
        raise ValueError(f"the optimizer holds {sum(sizes)} parameters and the model {len(params)} trainable ones")
    groups, start = [], 0
    for size in sizes:
        groups.append({"params": params[start : start + size]})
        start += size
    accepted = inspect.signature(type(optimizer)).parameters  # defaults may hold entries the constructor does not take
    clone = type(optimizer)(groups, **{k: v for k, v in optimizer.defaults.items() if k in accepted})
    clone.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # load_state_dict alone may alias the run's tensors
    return clone


def step_on(model, optimizer, batches: list[dict], clip: Optional[float] = None) -> None:
    """One optimizer step of ``model`` (in place) on the mean row loss over all rows of ``batches``,
    the gradient norm clipped to ``clip`` first when given (the run's ``gradient_clip_val``)."""
    rows = sum(int(b["input_ids"].shape[0]) for b in batches)
    device = model_device(model)
    with eval_mode(model, grad=True):
        optimizer.zero_grad(set_to_none=True)
        for batch in batches:
            (row_losses(forward(model, batch).logits, batch["labels"].to(device)).sum() / max(1, rows)).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
