"""Log-probabilities of target tokens through the language-model head, without the [M, V] logits.

For M scored positions, a vocabulary of V and hidden width H, ``log_softmax(hidden @ W.T)`` holds
M·V float32 logits, their log-softmax and, in backward, their gradient: at SmolLM2-135M (V = 49,152,
H = 576) that is 197 KB per position and tensor, against 2.3 KB for its float32 hidden state. Only one
number per position is wanted, log p(y) = z_y − logsumexp(z), and its gradient with respect to the
logits is g·(onehot(y) − softmax(z)), so the logits of a chunk of rows can be formed, reduced and
dropped, and formed again in backward. This is the fused linear + cross-entropy of Liger-Kernel
(Hsu et al. 2024, arXiv 2410.10989) and of "Cut your losses in large-vocabulary language models"
(Wijmans et al. 2024, arXiv 2411.09009): one more head matmul per chunk in exchange for memory
O(chunk·V) instead of O(M·V). What backward keeps is ``hidden``, ``weight``, ``targets`` and the M
per-row log-normalisers.

``head_parts`` splits a causal LM into the body that gives the final hidden states and the head's
weight, for the models whose logits are exactly ``hidden @ weight.T``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

from assay.lazy import torch

CHUNK_BYTES = 64 * 2**20
"""Default budget of one chunk's float32 logits: rows = CHUNK_BYTES // (4·V), at least 1 (341 rows
at V = 49,152; the forward's and backward's other temporaries are of the same [rows, V] size)."""


@dataclass
class TargetLogps:
    logps: torch.Tensor
    """[M] log p(target) of each row; differentiable with respect to ``hidden`` and ``weight``."""
    hits: Optional[torch.Tensor] = None
    """[M] bool, asked for with ``want_hits``: the target is the row's argmax (first of ties), no gradient."""
    log_sum_sq: Optional[torch.Tensor] = None
    """[M], asked for with ``want_sum_sq``: log Σ_v p(v)² = logsumexp(2z) − 2·logsumexp(z), no gradient
    (WPO's alignment term, as ``logps.log_sum_sq_probs`` gives it from full logits)."""


def chunk_rows(vocab: int, chunk_size: Optional[int] = None) -> int:
    """Rows per chunk: ``chunk_size`` when given, else as many as keep a chunk's float32 logits within
    ``CHUNK_BYTES``."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        return int(chunk_size)
    return max(1, CHUNK_BYTES // (4 * max(vocab, 1)))


def target_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: Optional[int] = None,
                 want_hits: bool = False, want_sum_sq: bool = False) -> TargetLogps:
    """log softmax(hidden @ weight.T)[m, targets[m]] for every row m, chunk by chunk over the rows.

    ``hidden`` [M, H] are the final hidden states of the positions that predict a target, ``weight``
    [V, H] the head, ``targets`` [M] token ids in [0, V) (no ignore index: pass only scored rows).

    Precision: the head matmul runs in the inputs' dtype (under autocast, the autocast dtype, as the
    model's own ``nn.Linear`` head would) and its result is upcast to float32, or kept in float64 for
    float64 inputs; softmax, logsumexp and the returned values are in that precision. So the values
    are those of ``F.log_softmax((hidden @ weight.T).float(), -1)`` gathered at the targets, and the
    gradients those autograd gives for that expression: the logits' gradient is cast to the matmul
    dtype, the weight's gradient is summed over chunks in float32 (float64) and cast to the weight's
    dtype. When ``weight`` does not require a gradient (a frozen head, as under LoRA) none is formed.
    """
    rows = chunk_rows(weight.shape[0], chunk_size)
    logps, hits, sum_sq = _fused()(hidden, weight, targets, rows, bool(want_hits), bool(want_sum_sq))
    return TargetLogps(logps=logps, hits=hits, log_sum_sq=sum_sq)


def _dtypes(hidden: torch.Tensor, weight: torch.Tensor) -> tuple[Any, Any]:
    """(dtype of the head matmul, dtype of the logits): autocast's dtype when it is on for the inputs'
    device, else the inputs' common dtype; the logits in float32, or float64 for float64 inputs."""
    device = hidden.device.type
    double = torch.float64 in (hidden.dtype, weight.dtype)  # autocast leaves float64 matmuls alone
    if torch.is_autocast_enabled(device) and not double:
        mm = torch.get_autocast_dtype(device)
    else:
        mm = torch.promote_types(hidden.dtype, weight.dtype)
    return mm, torch.promote_types(mm, torch.float32)


def _logits(h: torch.Tensor, w: torch.Tensor, acc: Any) -> torch.Tensor:
    """[rows, V] logits of one chunk in the accumulation dtype; a fresh tensor the caller may overwrite."""
    z = h @ w.T
    return z.to(acc) if z.dtype != acc else z


@lru_cache(maxsize=None)
def _fused() -> Any:
    """The ``apply`` of the autograd function, defined at first use (torch is imported lazily)."""

    class FusedTargetLogps(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets, rows, want_hits, want_sum_sq):
            mm, acc = _dtypes(hidden, weight)
            m = hidden.shape[0]
            lse = torch.empty(m, dtype=acc, device=hidden.device)
            logps = torch.empty(m, dtype=acc, device=hidden.device)
            hits = torch.empty(m, dtype=torch.bool, device=hidden.device) if want_hits else None
            sum_sq = torch.empty(m, dtype=acc, device=hidden.device) if want_sum_sq else None
            with torch.autocast(hidden.device.type, enabled=False):
                w = weight.to(mm)
                for s in range(0, m, rows):
                    e = min(s + rows, m)
                    z = _logits(hidden[s:e].to(mm), w, acc)
                    t = targets[s:e]
                    lse[s:e] = torch.logsumexp(z, dim=-1)
                    logps[s:e] = z.gather(1, t[:, None]).squeeze(1) - lse[s:e]
                    if hits is not None:
                        hits[s:e] = z.argmax(dim=-1) == t
                    if sum_sq is not None:
                        sum_sq[s:e] = torch.logsumexp(z.mul_(2.0), dim=-1) - 2.0 * lse[s:e]
            ctx.save_for_backward(hidden, weight, targets, lse)
            ctx.rows, ctx.mm, ctx.acc = rows, mm, acc
            if sum_sq is not None:
                ctx.mark_non_differentiable(sum_sq)
            return logps, hits, sum_sq

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad, _grad_hits, _grad_sum_sq):
            hidden, weight, targets, lse = ctx.saved_tensors
            need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            if grad is None or not (need_h or need_w):
                return None, None, None, None, None, None
            rows, mm, acc = ctx.rows, ctx.mm, ctx.acc
            m = hidden.shape[0]
            grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
            grad = grad.to(acc)
            with torch.autocast(hidden.device.type, enabled=False):
                w = weight.to(mm)
                for s in range(0, m, rows):
                    e = min(s + rows, m)
                    h = hidden[s:e].to(mm)
                    g = grad[s:e, None]
                    # d log p_y / dz = onehot(y) − softmax(z), times the row's incoming gradient g.
                    dz = _logits(h, w, acc).sub_(lse[s:e, None]).exp_().mul_(-g)
                    dz.scatter_add_(1, targets[s:e, None], g)
                    dz = dz.to(mm)
                    if need_h:
                        grad_h[s:e] = dz @ w
                    if need_w and mm == acc:
                        grad_w.addmm_(dz.T, h)  # in place: no second [V, H] buffer
                    elif need_w:
                        grad_w += dz.T @ h
            if grad_w is not None:
                grad_w = grad_w.to(weight.dtype)
            return grad_h, grad_w, None, None, None, None

    return FusedTargetLogps.apply


SCALES = {
    "final_logit_softcapping": (None,),
    "logits_scaling": (None, 1, 1.0),
    "logit_scale": (None, 1, 1.0),
    "lm_head_multiplier": (None, 1, 1.0),
    "output_multiplier": (None, 1, 1.0),
    "unpadded_vocab_size": (None,),
}
"""Config attributes with which a transformers causal LM changes its logits after the head matmul
(Gemma 2/3's tanh soft-capping, Granite's and HyperCLOVA X's logit scaling, Cohere's logit scale,
Falcon-H1's head multiplier, a vocabulary cut to its unpadded size), with their values that leave
the logits as they are."""


def head_parts(model: torch.nn.Module) -> Optional[tuple[torch.nn.Module, torch.Tensor]]:
    """(body, head weight) of a causal LM whose logits are exactly ``body(...).last_hidden_state @
    weight.T``, else None (the caller then takes the logits from the model).

    ``model`` is a transformers ``*ForCausalLM``, or a peft model around one. The body is its
    ``base_model`` (``causal_lm.model`` for Llama-like models: the decoder stack with the final norm),
    which ``*ForCausalLM.forward`` calls with the same ``input_ids``, ``attention_mask`` (a custom 4D
    mask included), ``position_ids`` and ``use_cache`` and whose ``last_hidden_state`` it hands to the
    head. Returned only when nothing else touches the logits: the head is a plain ``torch.nn.Linear``
    without bias or hooks (not a LoRA layer, a quantised linear or peft's ``modules_to_save`` copy),
    the causal LM holds no module, parameter or buffer besides the body and the head (a final
    logit bias, an extra norm or soft-cap module), and no config attribute of ``SCALES`` changes them.
    """
    if hasattr(model, "get_base_model"):  # peft's PeftModel
        model = model.get_base_model()
    get_head = getattr(model, "get_output_embeddings", None)
    body = getattr(model, "base_model", None)
    head = get_head() if callable(get_head) else None
    if body is None or body is model or head is None:
        return None
    if type(head) is not torch.nn.Linear or head.bias is not None or head._forward_hooks or head._forward_pre_hooks:
        return None
    if set(map(id, model.children())) != {id(body), id(head)}:
        return None
    if any(True for _ in model.named_parameters(recurse=False)) or any(True for _ in model.named_buffers(recurse=False)):
        return None
    config = getattr(model, "config", None)
    configs = [config]
    if config is not None and hasattr(config, "get_text_config"):
        configs.append(config.get_text_config())
    for c in configs:
        for name, trivial in SCALES.items():
            if getattr(c, name, None) not in trivial:
                return None
    return body, head.weight
