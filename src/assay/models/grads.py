"""Per-sample gradient features: batched per-sample gradients, Adam preconditioning, and a seeded
random projection (``assay.models.projection``); the one pipeline behind GraNd, LESS, CLUES, LQS
and the gradients ``dynamics=gradients`` records during training.

Per-sample gradients come from one ordinary batched forward and backward (LESS issue #42 computes
them at batch size 1). The gradient is taken over a parameter subset only: LoRA adapters when the
model has them, else named modules. Only that subset requires grad, so no graph is built before its
first use, and the backward asks only for the gradients at the outputs of the modules that own it
(no batch parameter gradient is formed). For an ``nn.Linear`` y = x Wᵀ + b they are read off
the batch's activations (Goodfellow 2015, arXiv 1510.01799; as in Opacus): with a_{b,t} the layer's
input and δ_{b,t} = ∂(Σ_b' ℓ_b')/∂y_{b,t} at token t of row b,

    ∂ℓ_b/∂W = Σ_t δ_{b,t}ᵀ a_{b,t},    ∂ℓ_b/∂b = Σ_t δ_{b,t},

which is exact because rows never interact (right padding and causal attention), so δ_{b,t} of the
summed loss is row b's own. Other leaf modules that own a chosen parameter (RMSNorm / LayerNorm
weights) get theirs from the same captured input and output gradient by a vmap'd vector-Jacobian
product of that module alone. A walk of the autograd graph checks that the loss reaches the chosen
parameters only through those modules' calls; a parameter used anywhere else (or an output changed
in place) falls back to ``vmap(grad(loss))`` over the whole model, as does everything with
``method="vmap"``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Iterator, Optional, Sequence

from assay.data.collate import IGNORE
from assay.errors import UserError
from assay.lazy import F, lazy_function, torch
from assay.models.passes import eval_mode, padded_batches
from assay.models.projection import PROJECTIONS, project

functional_call, grad, vjp, vmap = (lazy_function("torch.func", f) for f in ("functional_call", "grad", "vjp", "vmap"))


def grad_param_names(model: torch.nn.Module, patterns: Sequence[str] = (), field: str = "selection.params") -> list[str]:
    """Parameters the features are taken over: names containing any of ``patterns`` (the config
    ``field`` they come from, for the error); with no patterns, the LoRA adapters when present
    (CLUES / LESS), else the last decoder layer."""
    names = [n for n, _ in model.named_parameters()]
    if patterns:
        chosen = [n for n in names if any(p in n for p in patterns)]
        if not chosen:
            raise UserError(field, list(patterns), f"match no parameter of the model (e.g. {names[:4]})")
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



def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] mean NLL of each row over its labelled tokens: ``_sample_loss`` for a whole batch."""
    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = (targets != IGNORE).float()
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.clamp(min=0).reshape(-1), reduction="none").view_as(mask)
    return (nll * mask).sum(1) / mask.sum(1).clamp(min=1)


def _vmap_grads(model, input_ids, labels, names) -> dict[str, torch.Tensor]:
    """{name: [B, *shape]} per-sample gradients by ``vmap(grad(loss))`` over the whole model."""
    all_params = dict(model.named_parameters())
    params = {n: all_params[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in all_params.items() if n not in params}
    frozen.update(dict(model.named_buffers()))
    return vmap(grad(lambda p, x, y: _sample_loss(model, p, frozen, x, y)), in_dims=(None, 0, 0), randomness="different")(params, input_ids, labels)


def _plain_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) and type(module).forward is torch.nn.Linear.forward


class _PerSampleTaps:
    """Forward hooks on the modules that own a chosen parameter; each call's inputs and output are
    kept. After the backward gives δ, the gradient of the summed row losses at each kept output, a
    call contributes Σ_t δ_{b,t}ᵀ a_{b,t} to a Linear weight (Σ_t δ_{b,t} to its bias) and, for any
    other leaf module, the vmap'd vector-Jacobian product of that module alone with δ_b. Repeated
    calls and tied modules add up, as the gradient does."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str]):
        chosen = set(names)
        self.by_id = {id(p): n for n, p in model.named_parameters() if n in chosen}
        self.owners: dict[torch.nn.Module, list[tuple[str, str]]] = {}
        for m in model.modules():
            own = [(attr, self.by_id[id(p)]) for attr, p in m._parameters.items() if p is not None and id(p) in self.by_id]
            if own:
                self.owners[m] = own
        # a parameter of a container module may be used by code around its children: left to vmap
        self.hookable = set(self.by_id.values())
        for m, own in self.owners.items():
            if not _plain_linear(m) and next(m.children(), None) is not None:
                self.hookable -= {n for _, n in own}
        self.calls: list[tuple] = []  # (module, targets, args, kwargs, output, output version)
        self._replaying = False

    def modules(self) -> list[torch.nn.Module]:
        return [m for m, own in self.owners.items() if any(n in self.hookable for _, n in own)]

    def forward_hook(self, module, args, kwargs, out):
        if self._replaying:
            return
        targets = [(attr, n) for attr, n in self.owners[module] if n in self.hookable]
        if not torch.is_tensor(out):
            self.hookable -= {n for _, n in targets}
        elif out.requires_grad:
            self.calls.append((module, targets, args, kwargs, out, out._version))

    def unaccounted(self, loss: torch.Tensor) -> set[str]:
        """Chosen parameters the loss reaches other than through a kept call (a weight used by
        code outside its module's forward, or an output changed in place afterwards): a walk of the
        autograd graph that jumps from each kept output straight to that call's inputs."""
        leaked: set[str] = set()
        jump = {}
        for module, targets, args, kwargs, out, version in self.calls:
            if out._version != version:
                leaked.update(n for _, n in targets)
            inputs = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if torch.is_tensor(t) and t.requires_grad]
            leaked.update(self.by_id[id(t)] for t in inputs if t.grad_fn is None and id(t) in self.by_id)
            jump[out.grad_fn] = [t.grad_fn for t in inputs if t.grad_fn is not None]
        seen, stack = set(), [loss.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if node in jump:
                stack.extend(jump[node])
                continue
            var = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf tensor
            if var is not None and id(var) in self.by_id:
                leaked.add(self.by_id[id(var)])
            stack.extend(f for f, _ in node.next_functions)
        return leaked

    def contribute(self, deltas: Sequence[Optional[torch.Tensor]], views: dict[str, torch.Tensor], skip: set[str]) -> set[str]:
        """Add every kept call's per-sample contribution into ``views`` ({name: [B, *shape]});
        returns the names written (a name no call reached has zero gradient)."""
        written: set[str] = set()
        rows = next(iter(views.values())).shape[0]
        for (module, targets, args, kwargs, out, _), d in zip(self.calls, deltas):
            targets = [(attr, n) for attr, n in targets if n not in skip]
            if d is None or not targets:
                continue
            if d.dim() == 0 or d.shape[0] != rows:  # e.g. tokens gathered across rows (MoE experts)
                raise ValueError(f"{type(module).__name__} output of shape {tuple(d.shape)} has no leading batch dimension")
            if _plain_linear(module):
                x = args[0] if args else kwargs["input"]
                if x.shape[0] != rows:
                    raise ValueError(f"{type(module).__name__} input of shape {tuple(x.shape)} has no leading batch dimension")
                x, d = x.detach().reshape(rows, -1, x.shape[-1]), d.reshape(rows, -1, d.shape[-1])
                for attr, n in targets:
                    v = views[n]
                    if attr == "weight":
                        dt = d.transpose(1, 2).to(v.dtype)
                        torch.bmm(dt, x.to(v.dtype), out=v) if n not in written else v.baddbmm_(dt, x.to(v.dtype))
                    else:
                        v.copy_(d.sum(1)) if n not in written else v.add_(d.sum(1))
                    written.add(n)
                continue
            grads = self._module_vjp(module, [attr for attr, _ in targets], args, kwargs, d, rows)
            for attr, n in targets:
                views[n].copy_(grads[attr]) if n not in written else views[n].add_(grads[attr])
                written.add(n)
        return written

    def _module_vjp(self, module, attrs, args, kwargs, d, rows) -> dict[str, torch.Tensor]:
        """Per row b, ∂⟨δ_b, f(θ; x_b)⟩/∂θ for the module f alone, replayed on a batch of one row
        (so it sees the shapes it was written for); inputs without the batch dimension are shared."""
        leaves, spec = torch.utils._pytree.tree_flatten((args, kwargs))
        leaves = [t.detach() if torch.is_tensor(t) else t for t in leaves]
        batched = [i for i, t in enumerate(leaves) if torch.is_tensor(t) and t.dim() > 0 and t.shape[0] == rows]

        def one(d_b, *row):
            row_leaves = list(leaves)
            for i, t in zip(batched, row):
                row_leaves[i] = t.unsqueeze(0)
            a_b, kw_b = torch.utils._pytree.tree_unflatten(row_leaves, spec)
            _, pull = vjp(lambda p: functional_call(module, p, a_b, kw_b), {a: module._parameters[a].detach() for a in attrs})
            return pull(d_b.unsqueeze(0))[0]

        self._replaying = True
        try:
            return vmap(one)(d, *(leaves[i] for i in batched))
        finally:
            self._replaying = False


def _hooked_grads(model, input_ids, labels, names, out: torch.Tensor) -> set[str]:
    """Write the per-sample gradients of the parameters the taps handle into their columns of
    ``out`` ([B, D], ``names`` in order), from one batched forward and one backward that stops at
    the chosen modules' outputs (no parameter gradient is formed). Returns the names written."""
    rows = len(input_ids)
    taps = _PerSampleTaps(model, names)
    if not taps.hookable:
        return set()
    params = dict(model.named_parameters())
    views, start = {}, 0
    for n in names:
        views[n] = out[:, start : start + params[n].numel()].unflatten(1, params[n].shape) if params[n].dim() else out[:, start]
        start += params[n].numel()
    flags = {n: p.requires_grad for n, p in params.items()}
    handles = [m.register_forward_hook(taps.forward_hook, with_kwargs=True) for m in taps.modules()]
    try:
        # only the tapped parameters require grad: nothing before their first use builds a graph
        for n, p in params.items():
            p.requires_grad_(n in taps.hookable)
        with torch.enable_grad():
            losses = row_losses(model(input_ids=input_ids, use_cache=False).logits, labels)
    finally:
        for h in handles:
            h.remove()
        for n, p in params.items():
            p.requires_grad_(flags[n])
    if not losses.requires_grad:  # no tapped parameter reaches the loss: their gradients are zero
        for n in taps.hookable:
            views[n].zero_()
        return set(taps.hookable)
    loss = losses.sum()
    leaked = taps.unaccounted(loss)
    if leaked:
        warnings.warn(f"{sorted(leaked)} reach the loss outside their modules' forward; their per-sample gradients use vmap")
    outputs = [call[4] for call in taps.calls]
    deltas = torch.autograd.grad(loss, outputs, allow_unused=True) if outputs else []
    done = set(taps.hookable) - leaked
    try:
        written = taps.contribute(deltas, views, skip=leaked)
    except Exception as e:  # rows mixed inside a module, or a forward vmap cannot replay
        warnings.warn(f"per-sample gradients from module taps failed ({type(e).__name__}: {e}); using vmap")
        return set()
    for n in done - written:
        views[n].zero_()
    return done


def per_sample_grads(
    model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, names: Sequence[str], method: str = "auto", out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """[B, D] flattened per-sample gradients over ``names`` (in that order) of each row's mean
    response NLL. ``method="auto"``: one batched backward with taps on the owning modules, vmap
    for whatever the taps cannot account for; ``"vmap"``: ``vmap(grad(loss))`` over the whole
    model for all. ``out``: a [B, D] buffer to write into (e.g. reused across batches)."""
    if method not in ("auto", "vmap"):
        raise ValueError(f"method must be 'auto' or 'vmap', not {method!r}")
    params = dict(model.named_parameters())
    if out is None:
        dtype = functools.reduce(torch.promote_types, (params[n].dtype for n in names))
        out = torch.empty(len(input_ids), sum(params[n].numel() for n in names), dtype=dtype, device=params[names[0]].device)
    done = _hooked_grads(model, input_ids, labels, names, out) if method == "auto" else set()
    rest = [n for n in names if n not in done]
    if rest:
        grads = _vmap_grads(model, input_ids, labels, rest)
        start = 0
        for n in names:
            if n in grads:
                out[:, start : start + params[n].numel()] = grads[n].reshape(len(input_ids), -1)
            start += params[n].numel()
    return out


def adam_precondition(g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, betas=(0.9, 0.999), eps: float = 1e-8) -> torch.Tensor:
    """LESS / CLUES's Adam direction of a gradient from a checkpoint's moments (no bias correction):
    m' = β₁m + (1−β₁)g, v' = β₂v + (1−β₂)g², Γ = m' / sqrt(v' + ε)."""
    m = g.mul(1 - betas[0]).add_(exp_avg, alpha=betas[0])
    v = g.square().mul_(1 - betas[1]).add_(exp_avg_sq, alpha=betas[1])
    return m.div_(v.add_(eps).sqrt_())


Moments = tuple  # (exp_avg, exp_avg_sq) flattened over the chosen parameters, optionally their betas


def feature_rows(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    names: Sequence[str],
    batch_size: int,
    proj_dim: int = 0,
    seed: int = 0,
    adam: Optional[Moments] = None,
    projection: str = "sjlt",
    buffer: Optional[torch.Tensor] = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per ``batch_size`` rows of one padded batch: (the norms of the plain per-sample gradients,
    their features), the features being the gradients Adam-preconditioned with ``adam`` =
    (exp_avg, exp_avg_sq[, betas]) when given and projected to ``proj_dim`` with ``projection`` when
    > 0. ``buffer``: a [≥ batch_size, D] tensor the raw gradients are written into (reused across
    calls; the unprojected features are views of it). The model runs in eval mode (no dropout:
    features are a function of the weights only) and no parameter's ``.grad`` is touched."""
    if proj_dim and projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {list(PROJECTIONS)}, not {projection!r}")
    for start in range(0, len(input_ids), batch_size):
        part = slice(start, min(start + batch_size, len(input_ids)))
        out = None if buffer is None else buffer[: part.stop - part.start]
        with eval_mode(model, grad=True):  # entered per chunk: no mode is held across the yield
            g = per_sample_grads(model, input_ids[part], labels[part], names, out=out)
            norms = g.norm(dim=1)
            if adam is not None:
                g = adam_precondition(g, *adam)
            if proj_dim:
                g = project(g, proj_dim, seed, kind=projection)
        yield norms, g


def gradient_features(
    model: torch.nn.Module,
    ds,
    pad_id: int,
    names: Sequence[str],
    batch_size: int = 8,
    proj_dim: int = 0,
    seed: int = 0,
    adam: Optional[Moments] = None,
    projection: str = "sjlt",
) -> torch.Tensor:
    """[N, D or proj_dim] per-sample gradient features of ``ds`` (response loss given the prompt),
    Adam-preconditioned when ``adam`` = (exp_avg, exp_avg_sq) flattened over ``names``, projected
    with ``projection`` (one of ``PROJECTIONS``) when ``proj_dim`` > 0."""
    if proj_dim and projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {list(PROJECTIONS)}, not {projection!r}")
    params = dict(model.named_parameters())
    device = params[names[0]].device
    dtype = functools.reduce(torch.promote_types, (params[n].dtype for n in names))
    d = sum(params[n].numel() for n in names)
    if adam is not None:
        adam = tuple(m.to(device) if torch.is_tensor(m) else m for m in adam)
    # exact features are written in place into the result; projected ones go through one [B, D]
    # buffer reused by every batch (a fresh multi-MiB tensor per batch costs its page faults)
    result = torch.empty(len(ds), proj_dim or d, dtype=torch.float32 if proj_dim else dtype)
    buffer = torch.empty(min(batch_size, len(ds)), d, dtype=dtype, device=device) if proj_dim or device.type != "cpu" else None
    start = 0
    for batch in padded_batches(ds, pad_id, batch_size, desc="per-sample gradients"):
        rows = len(batch["input_ids"])
        target = buffer if buffer is not None else result[start : start + rows]
        for _, g in feature_rows(model, batch["input_ids"].to(device), batch["labels"].to(device), names, rows, proj_dim, seed, adam, projection, target):
            if g.data_ptr() != result[start].data_ptr():
                result[start : start + rows] = g.detach().cpu()
        start += rows
    return result
