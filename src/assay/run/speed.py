"""Throughput and model FLOP utilisation (MFU) of every training run.

MFU = the model FLOPs a step needs (counted from the model's shape and the tokens the batch holds,
not from what the kernels happen to execute) per second of wall clock ÷ the device's peak FLOP/s
(:mod:`assay.run.peak`). The FLOP count follows PaLM's appendix B (Chowdhery et al. 2022, arXiv
2204.02311) and Kaplan et al. 2020 (arXiv 2001.08361, section 2.1):

- **N** counts the weights of every matrix multiplication the forward pass makes: each linear layer
  of every block *and the output layer (lm head)*, which multiplies every token by a d x V matrix
  even when its weights are tied to the input embedding. The input embedding is a lookup, not a
  multiplication, and norms, biases, activations and the softmax are elementwise (negligible); none
  of them count. A forward pass costs 2 FLOPs (a multiply and an add) per weight per token: **2N**.
- **Attention** multiplies queries by keys and attention weights by values: 2·2·H·Q·T FLOPs per token
  and layer for T tokens of context, H heads of width Q. Like PaLM, the whole T x T score matrix is
  counted, not its causal half, so the numbers compare with published MFUs; T is each sequence's own
  length (a packed row's segments count separately), so a batch adds 4·L·H·Q·Σ t² forward.
- **Backward** costs twice the forward for the gradient with respect to the activations (2N) and, for
  a weight that is trained, twice again for the gradient with respect to the weight (2N).

Per token of a sequence of length T, so:

- full fine-tuning, forward + backward: 6·N + 12·L·H·Q·T  (PaLM's 6N + 12LHQT);
- LoRA: the frozen base weights N_frozen get a forward (2) and an activation gradient (2), no weight
  gradient; the adapters N_lora (r·(d_in + d_out) per adapted layer) get all three:
  4·N_frozen + 6·N_lora + 12·L·H·Q·T  (N_frozen includes the lm head);
- the reference model of the DPO family: assay computes its log-probs once before training and
  caches them on disk (``assay.objectives.reference``), so a step spends **0** FLOPs on it; TR-DPO's
  live reference (``objective.ref_sync``) runs a forward every step: + 2·N + 4·L·H·Q·T.

In general a token costs 6·N_trainable + 4·N_frozen + 12·L·H·Q·T, whatever mix of trained and frozen
weights the run has (LoRA, frozen layers). Tokens are those the batch holds, padding excluded: the
attention-mask tokens for SFT and the two-sequence preference layout (prompt + chosen and prompt +
rejected), and prompt + chosen + rejected once per pair in the shared-prompt layout. Extra
no-gradient passes some methods make (β-DPO's look-ahead over an accumulated batch, evaluation) are
not counted: MFU counts training FLOPs only.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl

WINDOW = 20
"""Steps the logged (progress bar, logger) rates are averaged over."""


@dataclass(frozen=True)
class ModelShape:
    """What a token's FLOPs depend on."""

    trainable: int
    """N_trainable: weights of matrix multiplications whose gradient is taken."""
    frozen: int
    """N_frozen: weights of matrix multiplications that are not trained (LoRA's base model)."""
    layers: int
    """L, transformer blocks."""
    attention_width: int
    """H·Q: query heads x head width (0 when the model's config does not say; attention then adds nothing)."""

    @property
    def params(self) -> int:
        return self.trainable + self.frozen


def model_shape(model: Any) -> ModelShape:
    """The matmul weights of ``model`` (``nn.Linear`` and transformers' ``Conv1D``; LoRA's factors are
    linear layers of their own, counted for the active adapters only), split by whether they are trained, and its blocks and attention width
    from its config (Llama, GPT-2 and most Hub configs name them)."""
    import torch

    trainable = frozen = 0
    idle = _inactive_adapters(model)
    for module in model.modules():
        if id(module) in idle:
            continue
        if isinstance(module, torch.nn.Linear):
            n, weight = module.in_features * module.out_features, module.weight
        elif type(module).__name__ == "Conv1D" and hasattr(module, "weight"):
            n, weight = module.weight.numel(), module.weight
        else:
            continue
        if weight.requires_grad:
            trainable += n
        else:
            frozen += n
    config = getattr(model, "config", None)
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(config, "num_attention_heads", "n_head")
    head_dim = _first(config, "head_dim")
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    if not head_dim and heads and hidden:
        head_dim = hidden // heads
    return ModelShape(trainable, frozen, layers, heads * head_dim)


def _inactive_adapters(model: Any) -> set[int]:
    """Ids of the layers of LoRA adapters a forward pass does not use: peft keeps every adapter added to
    a layer (TRL adds a frozen copy named ``ref`` for its reference) and multiplies only the active ones."""
    import torch

    idle: set[int] = set()
    for module in model.modules():
        adapters = getattr(module, "lora_A", None)
        if not isinstance(adapters, torch.nn.ModuleDict):
            continue
        active = set() if getattr(module, "disable_adapters", False) else set(getattr(module, "active_adapters", adapters.keys()))
        for group in ("lora_A", "lora_B"):
            for name, layer in getattr(module, group).items():
                if name not in active:
                    idle.update(id(m) for m in layer.modules())
    return idle


def _first(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def train_flops(shape: ModelShape, tokens: float, square_sum: float) -> float:
    """Forward + backward FLOPs of a batch of ``tokens`` tokens whose sequences' lengths squared sum to
    ``square_sum``: (6·N_trainable + 4·N_frozen)·tokens + 12·L·H·Q·Σ t²."""
    return (6 * shape.trainable + 4 * shape.frozen) * tokens + 12 * shape.layers * shape.attention_width * square_sum


def forward_flops(shape: ModelShape, tokens: float, square_sum: float) -> float:
    """Forward FLOPs alone (a live reference model): 2·N·tokens + 4·L·H·Q·Σ t²."""
    return 2 * shape.params * tokens + 4 * shape.layers * shape.attention_width * square_sum


def flops_per_token(shape: ModelShape, context: int, reference_forward: bool = False) -> float:
    """FLOPs a token of a sequence of ``context`` tokens costs in training (+ a reference forward)."""
    per = train_flops(shape, context, context**2) / context
    return per + (forward_flops(shape, context, context**2) / context if reference_forward else 0.0)


def mfu(flops: float, seconds: float, peak_flops: float) -> float:
    """Model FLOP utilisation: achieved model FLOP/s ÷ peak FLOP/s."""
    return flops / seconds / peak_flops


def batch_counts(batch: dict) -> tuple[int, int, int]:
    """(samples, tokens, Σ t² over its sequences) of a collated batch: examples (SFT) or pairs (the
    preference layouts), and the tokens it holds without padding."""
    import torch

    ids = batch["input_ids"]
    samples = len(batch["ids"]) if "ids" in batch else ids.size(0)
    if "segment" in batch:  # the shared-prompt layout: one segment per pair, -1 on padding
        segment = batch["segment"]
        lengths = torch.bincount(segment[segment >= 0].flatten())
    elif "attention_mask" in batch:
        lengths = batch["attention_mask"].sum(dim=1)
    else:
        lengths = torch.full((ids.size(0),), ids.size(1), device=ids.device)
    lengths = lengths.long()
    tokens, square = torch.stack([lengths.sum(), (lengths * lengths).sum()]).tolist()
    return samples, int(tokens), int(square)


class Throughput(pl.Callback):
    """Per optimizer step: tokens/s, samples/s and MFU, logged as ``speed/tokens_per_s``,
    ``speed/samples_per_s`` and ``speed/mfu`` (averages over the last :data:`WINDOW` steps) to the
    logger and the progress bar; :meth:`summary` gives the run's averages for ``summary.json``.

    A step's time is the wall clock from the end of the step before (data loading, forward,
    backward, optimizer and every callback's work inside); time spent validating is left out, and so
    is the first step (warm-up: allocations, thread pools, lazy kernels), unless it is the only one.
    Several processes: each rank measures its own steps; tokens/s and samples/s are its rates times
    the world size (the ranks' batches are alike), MFU is per device."""

    def __init__(self, peak_flops: Optional[float] = None, cache_dir: Optional[Path] = None, window: int = WINDOW):
        self.peak_flops, self.peak_source = peak_flops, "trainer.peak_flops" if peak_flops else None
        self.cache_dir, self.window = cache_dir, window
        self.shape: Optional[ModelShape] = None
        self.reference_forward = False
        self.steps: list[tuple[int, int, float, float]] = []
        """(samples, tokens, FLOPs, seconds) of every optimizer step, the first included."""
        self._recent: collections.deque = collections.deque(maxlen=window)
        self._pending = [0, 0, 0.0]
        self._mark: Optional[float] = None
        self._step = 0
        self._world = 1

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Before a strategy wraps or shards the model: the shape is read from whole layers.
        model = getattr(pl_module, "model", pl_module)
        self.shape = model_shape(model)
        self.reference_forward = getattr(pl_module, "live_reference", None) is not None

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.peak_flops is None:
            from assay.run.log import to_file
            from assay.run.peak import peak_flops

            self.peak_flops, self.peak_source = peak_flops(pl_module.device, self.cache_dir)
            to_file("peak %.1f GFLOP/s per device (%s)", self.peak_flops / 1e9, self.peak_source)  # summary.json has it too
        self._world = max(int(getattr(trainer, "world_size", 1) or 1), 1)

    def on_train_start(self, trainer, pl_module) -> None:
        self._step, self._mark = trainer.global_step, None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._mark = None  # validation is not training time; the clock restarts at the next batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._mark is None:
            self._mark = self._now(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        samples, tokens, square = batch_counts(batch)
        flops = train_flops(self.shape, tokens, square)
        if self.reference_forward:
            flops += forward_flops(self.shape, tokens, square)
        pending = self._pending
        pending[0] += samples
        pending[1] += tokens
        pending[2] += flops
        if trainer.global_step == self._step:  # inside an accumulated optimizer batch
            return
        self._step = trainer.global_step
        now = self._now(pl_module)
        seconds, self._mark = max(now - (self._mark if self._mark is not None else now), 1e-9), now
        record = (pending[0], pending[1], pending[2], seconds)
        self._pending = [0, 0, 0.0]
        if self.steps:  # the first step is the warm-up
            self._recent.append(record)
        self.steps.append(record)
        if self._recent and (_logger_writes(trainer) or trainer.progress_bar_callback is not None):
            pl_module.log_dict(self.rates(list(self._recent)), prog_bar=True, on_step=True, on_epoch=False, batch_size=1)

    def rates(self, records: list[tuple[int, int, float, float]]) -> dict[str, float]:
        """tokens/s, samples/s and MFU over ``records``."""
        samples, tokens, flops, seconds = (sum(r[i] for r in records) for i in range(4))
        return {
            "speed/tokens_per_s": self._world * tokens / seconds,
            "speed/samples_per_s": self._world * samples / seconds,
            "speed/mfu": mfu(flops, seconds, self.peak_flops),
        }

    def summary(self) -> dict[str, Any]:
        """The run's averages (the first step left out when there are others), the peak and its source,
        and the mean model FLOPs per token, for ``summary.json``'s metrics; empty if no step ran."""
        timed = self.steps[1:] or self.steps
        if not timed or not self.peak_flops:
            return {}
        tokens, flops = sum(r[1] for r in timed), sum(r[2] for r in timed)
        out: dict[str, Any] = {**self.rates(timed), "speed/flops_per_token": flops / max(tokens, 1),
                               "speed/peak_flops": float(self.peak_flops), "speed/peak_source": self.peak_source,
                               "speed/timed_steps": len(timed)}
        return {k: v for k, v in out.items() if not isinstance(v, float) or math.isfinite(v)}

    @staticmethod
    def _now(pl_module) -> float:
        """Wall clock; on a GPU once its queued kernels are done, so a step is charged what it ran."""
        device = getattr(pl_module, "device", None)
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.synchronize(device)
        return time.perf_counter()


def _logger_writes(trainer) -> bool:
    """Whether the logger writes this step (``log_every_n_steps``): each ``log`` call costs a
    millisecond or two on the CPU, so values go in only then (or while a progress bar shows them)."""
    connector = getattr(trainer, "_logger_connector", None)
    if connector is not None and hasattr(connector, "should_update_logs"):
        return bool(connector.should_update_logs)
    return trainer.global_step % max(trainer.log_every_n_steps, 1) == 0
