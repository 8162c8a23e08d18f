"""Trainer profiles (config group ``trainer``): the Lightning ``Trainer``, built via ``_target_``.

A profile names an accelerator, a device count, a Lightning strategy and a precision. What a
strategy does to the model decides what else a run may ask for: one that shards parameters
(FSDP, DeepSpeed ZeRO-3) leaves no rank with the whole model between its own forward passes, so
per-sample gradient features, which are computed over whole parameters outside the training step,
are refused before anything is built (:func:`check_run`). Whether the machine can run the profile
at all (accelerator, devices, strategy installed, precision) is checked by
``assay.run.machine.check_trainer`` before any job starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Optional

import hydra
from omegaconf import MISSING, OmegaConf

from assay.errors import UserError, check
from assay.registry import register

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine", "transformer-engine-float16")
LEGACY_PRECISIONS = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}
"""Lightning's older spellings, which it still accepts."""
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
DEFAULT_STEPS = 2500
"""A run's length when neither ``trainer.max_steps`` nor ``trainer.max_epochs`` is set (the tiny model's)."""


def steps_unless_epochs(epochs: Any, steps: Any) -> Any:
    """``${assay.steps_unless_epochs:${.max_epochs},N}``, the default ``max_steps`` of a profile or a model preset:
    ``trainer.max_epochs`` alone sets the length (no step default caps it); given both, whichever comes first."""
    return None if epochs is not None and int(epochs) > 0 else steps


if not OmegaConf.has_resolver("assay.steps_unless_epochs"):
    OmegaConf.register_new_resolver("assay.steps_unless_epochs", steps_unless_epochs)


@dataclass(frozen=True)
class StrategyInfo:
    """What a Lightning strategy needs and what it does to parameters and optimizer state."""

    requires: Optional[str] = None
    """A module that must be importable (DeepSpeed is an optional extra)."""
    gpu_only: bool = False
    """Lightning runs it on CUDA devices only."""
    multi_process: bool = False
    shards_parameters: bool = False
    """Parameters live in shards across ranks outside each layer's own forward/backward."""
    shards_optimizer_state: bool = False
    """The optimizer's moments live in (flattened) shards, not per parameter on every rank."""


_DDP = StrategyInfo(multi_process=True)
_DEEPSPEED = StrategyInfo(requires="deepspeed", gpu_only=True, multi_process=True, shards_optimizer_state=True)
STRATEGIES: dict[str, StrategyInfo] = {
    "auto": StrategyInfo(),
    "single_device": StrategyInfo(),
    **{name: _DDP for name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_find_unused_parameters_true", "ddp_spawn_find_unused_parameters_true")},
    "fsdp": StrategyInfo(gpu_only=True, multi_process=True, shards_parameters=True, shards_optimizer_state=True),
    # ZeRO stages (Rajbhandari et al. 2020, arXiv 1910.02054): 1 shards optimizer state, 2 also
    # gradients, 3 also parameters.
    "deepspeed_stage_1": _DEEPSPEED,
    "deepspeed_stage_2": _DEEPSPEED,
    "deepspeed_stage_2_offload": _DEEPSPEED,
    "deepspeed_stage_3": StrategyInfo(requires="deepspeed", gpu_only=True, multi_process=True, shards_parameters=True, shards_optimizer_state=True),
    "deepspeed_stage_3_offload": StrategyInfo(requires="deepspeed", gpu_only=True, multi_process=True, shards_parameters=True, shards_optimizer_state=True),
}
INSTALL_HINT = {"deepspeed": "pip install 'assay[deepspeed]'"}


@dataclass
class TrainerConfig:
    _target_: str = "pytorch_lightning.Trainer"
    name: str = MISSING
    accelerator: str = "cpu"
    """``cpu``, ``gpu`` (= ``cuda``), ``mps``, ``tpu`` or ``auto``; checked against the machine before any job starts."""
    devices: Any = 1
    """Devices (processes) per node: a count, -1 for all, ``auto``, or a list of device indices."""
    strategy: str = "auto"
    """A Lightning strategy name: ``auto``, ``ddp``, ``fsdp``, ``deepspeed_stage_2``, ``deepspeed_stage_3``, ..."""
    num_nodes: int = 1
    precision: str = "32-true"
    """``32-true``, ``bf16-mixed`` (bf16 autocast, float32 weights and optimizer), ``16-mixed`` (GPU only),
    ``bf16-true`` / ``16-true`` (weights in half precision), ``64-true``."""
    max_steps: Optional[int] = f"${{assay.steps_unless_epochs:${{.max_epochs}},{DEFAULT_STEPS}}}"  # type: ignore[assignment]
    """Optimizer steps; the run's length. Default 2,500, or none when ``max_epochs`` is given: the
    steps then follow from the epochs and the training rows (:meth:`for_rows`)."""
    max_epochs: int = -1
    """Passes over the (selected) training rows; -1 = no limit. Alone, it sets the run's length."""
    val_check_interval: Any = 500
    """Validate every this many training batches (int) or fraction of an epoch (float)."""
    check_val_every_n_epoch: Optional[int] = None
    limit_val_batches: Any = 1.0
    log_every_n_steps: int = 10
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    deterministic: Any = "warn"
    enable_progress_bar: bool = True
    enable_model_summary: bool = False
    num_sanity_val_steps: int = 0
    threads: Optional[int] = None
    """Intra-op CPU threads of this process (``torch.set_num_threads``); null = torch's default (all
    cores). With ``hydra/launcher=local_parallel`` jobs side by side, 1 each avoids oversubscription."""
    throughput: bool = True
    """Log tokens/s, samples/s and MFU every step (``speed/...``: logger, progress bar, ``summary.json``;
    ``assay.run.speed``)."""
    peak_flops: Optional[float] = None
    """The device's peak FLOP/s that MFU divides by; null = a CUDA GPU's datasheet bf16 peak, or on
    the CPU a float32 matmul measured once per machine and thread count and cached (``assay.run.peak``)."""

    NOT_TRAINER_ARGS: ClassVar[tuple[str, ...]] = ("name", "threads", "throughput", "peak_flops")
    """Fields of the profile that are not ``pytorch_lightning.Trainer`` arguments."""

    def __post_init__(self) -> None:
        if isinstance(self.max_steps, str):  # built in Python, not composed: the default's interpolation is unresolved
            self.max_steps = steps_unless_epochs(self.max_epochs, DEFAULT_STEPS)
        if self.threads is not None:
            check(self.threads > 0, "trainer.threads", self.threads, "must be a positive integer (or null)")
        if self.peak_flops is not None:
            check(self.peak_flops > 0, "trainer.peak_flops", self.peak_flops, "must be a positive number of FLOP/s (or null: measured or from the datasheet)")
        check(self.max_steps is None or self.max_steps > 0, "trainer.max_steps", self.max_steps, "must be a positive integer (or null with trainer.max_epochs)")
        check(self.max_steps is not None or self.max_epochs > 0, "trainer.max_steps", self.max_steps,
              "is null and trainer.max_epochs is not set: give the run's length as one of them")
        check(self.max_epochs == -1 or self.max_epochs > 0, "trainer.max_epochs", self.max_epochs, "must be a positive integer, or -1 for no limit (0 would train nothing)")
        check(valid_val_check_interval(self.val_check_interval), "trainer.val_check_interval", self.val_check_interval,
              "must be a positive number of training batches (int) or a fraction of an epoch in (0, 1] (float)")
        check(self.accumulate_grad_batches > 0, "trainer.accumulate_grad_batches", self.accumulate_grad_batches, "must be a positive integer")
        if self.gradient_clip_val is not None:
            check(self.gradient_clip_val > 0, "trainer.gradient_clip_val", self.gradient_clip_val, "must be > 0 (or null)")
        check(self.accelerator in ACCELERATORS, "trainer.accelerator", self.accelerator, f"must be one of {list(ACCELERATORS)}")
        check(self.strategy in STRATEGIES, "trainer.strategy", self.strategy, f"must be one of {sorted(STRATEGIES)}")
        check(str(self.precision) in PRECISIONS + tuple(LEGACY_PRECISIONS), "trainer.precision", self.precision, f"must be one of {list(PRECISIONS)}")
        check(self.num_nodes > 0, "trainer.num_nodes", self.num_nodes, "must be a positive integer")
        requested_devices(self.devices)  # the form is checked here, the count against the machine in preflight
        if self.info.gpu_only:
            check(self.accelerator in ("gpu", "cuda", "auto"), "trainer.strategy", self.strategy,
                  f"runs on CUDA GPUs only (trainer.accelerator={self.accelerator}); use trainer=ddp for several CPU processes")
        if self.accelerator == "cpu" and self.precision_name == "16-mixed":
            raise UserError("trainer.precision", self.precision, "float16 autocast is not supported on the CPU; use bf16-mixed or 32-true")

    # ---- capabilities the rest of the run asks about ------------------------------------------
    @property
    def precision_name(self) -> str:
        return LEGACY_PRECISIONS.get(str(self.precision), str(self.precision))

    @property
    def info(self) -> StrategyInfo:
        return STRATEGIES[self.strategy]

    @property
    def shards_parameters(self) -> bool:
        return self.info.shards_parameters

    @property
    def shards_optimizer_state(self) -> bool:
        return self.info.shards_optimizer_state

    def apply_threads(self) -> None:
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)

    def build_strategy(self, model: Any = None) -> Any:
        """The ``strategy`` argument of the Trainer (a name, or a strategy object built for ``model``)."""
        return self.strategy

    def for_rows(self, rows: int, batch_rows: int, world: int) -> "TrainerConfig":
        """The profile with ``max_steps`` set: unchanged when given, else ``max_epochs`` x the optimizer
        steps of one epoch over ``rows`` training rows (each of ``world`` processes serves
        ``rows // world`` of them in batches of ``batch_rows``, the last batch partial, and steps every
        ``accumulate_grad_batches`` batches and at the epoch's end, as Lightning does). The schedule,
        the ordering and the checkpoint cadence all read this number."""
        if self.max_steps is not None:
            return self
        batches = -(-(rows // world) // batch_rows)
        check(batches > 0, "trainer.max_epochs", self.max_epochs,
              f"cannot set the run's length: {rows} training rows make no batch on {world} process(es); set trainer.max_steps")
        return replace(self, max_steps=self.max_epochs * -(-batches // self.accumulate_grad_batches))

    def build(self, model: Any = None, **runtime: Any):
        """The Lightning Trainer; ``model`` is the policy (a strategy may shape itself to it)."""
        self.apply_threads()
        kwargs = {k: v for k, v in asdict(self).items() if k not in self.NOT_TRAINER_ARGS}
        kwargs["strategy"] = self.build_strategy(model)
        # The sampler shards after ordering; Lightning must not swap in a DistributedSampler.
        return hydra.utils.instantiate(kwargs, use_distributed_sampler=False, **runtime)


def valid_val_check_interval(value: Any) -> bool:
    """Lightning reads an int as batches between validations and a float as a fraction of an epoch;
    0 (or a negative number) would make it divide by zero or never validate."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value >= 1 if isinstance(value, int) else 0.0 < value <= 1.0


def requested_devices(devices: Any) -> Optional[int | list[int]]:
    """``trainer.devices`` as a count (None = all the machine has) or a list of device indices."""
    if devices in (-1, "-1", "auto"):
        return None
    if isinstance(devices, bool):
        raise UserError("trainer.devices", devices, "must be a positive count, -1 (all), 'auto' or a list of device indices")
    if isinstance(devices, int):
        check(devices > 0, "trainer.devices", devices, "must be a positive count, -1 (all), 'auto' or a list of device indices")
        return devices
    if isinstance(devices, str):
        text = devices.strip()
        if text.isdigit():
            return requested_devices(int(text))
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if parts and all(p.isdigit() for p in parts):
            return [int(p) for p in parts]
    else:
        try:
            indices = list(devices)
        except TypeError:
            indices = None
        if indices and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices):
            return indices
    raise UserError("trainer.devices", devices, "must be a positive count, -1 (all), 'auto' or a list of device indices")


def decoder_layer_classes(model: Any) -> set[type]:
    """The classes of the model's transformer blocks: those transformers marks as never to be split
    across devices (``_no_split_modules``, e.g. ``LlamaDecoderLayer``), found in the built model
    (under LoRA adapters too). Each block is one FSDP unit: its parameters are gathered for its own
    forward and backward and freed after, so at most one block is whole at a time."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not classes:
        raise UserError("trainer.strategy", "fsdp", f"found no decoder layer class to wrap in {type(model).__name__} (it declares no _no_split_modules)")
    return classes


def check_run(spec: Any) -> None:
    """What the trainer profile and the model's compute settings need from the rest of the run, as
    one-line errors before anything is built (pure config; the machine is checked in preflight)."""
    trainer = spec.trainer
    wants = [f"{group}={getattr(spec, group).name}" for group in ("dynamics", "selection") if getattr(getattr(spec, group), "per_sample_gradients", False)]
    if wants and trainer.shards_parameters:
        raise UserError("trainer.strategy", trainer.strategy, f"shards parameters across ranks, and {' and '.join(wants)} needs every parameter "
                        "whole on every rank for per-sample gradients; use trainer=ddp or trainer=deepspeed_zero2 (or a scorer / dynamics without gradients)")
    probe = getattr(spec.selection, "probe_optimizer", None) if getattr(spec.selection, "probes_whole_model", False) else None
    if probe is not None and (trainer.shards_parameters or (probe == "run" and trainer.shards_optimizer_state)):
        raise UserError(
            "trainer.strategy", trainer.strategy,
            f"shards the model or its optimizer state, and selection={spec.selection.name} steps a whole copy of the model "
            f"(probe_optimizer={probe}) on every probe; use trainer=ddp (or selection.probe_optimizer=sgd with trainer=deepspeed_zero2)",
        )
    if getattr(spec.dynamics, "adam", False) and trainer.shards_optimizer_state:
        raise UserError("dynamics.adam", True, f"reads each parameter's Adam moments, which trainer.strategy={trainer.strategy} keeps in flattened shards; set dynamics.adam=false or use trainer=ddp")
    if getattr(spec.objective, "live_reference", False):  # TR-DPO: a frozen copy of the policy inside the LightningModule
        if trainer.shards_parameters or trainer.shards_optimizer_state:
            raise UserError("objective.ref_sync", spec.objective.ref_sync, f"keeps a copy of the policy as its reference, which "
                            f"trainer.strategy={trainer.strategy} would shard or wrap with the policy; use trainer=gpu or trainer=ddp")
        if getattr(getattr(spec.model, "lora", None), "r", 0):
            raise UserError("objective.ref_sync", spec.objective.ref_sync, "mixes the policy's weights into the reference, and with "
                            "LoRA adapters those are factors whose mix is not the mix of their products (TRL refuses PEFT too); set model.lora.r=0")
    attention = getattr(spec.model, "attn_implementation", None)
    if attention == "flash_attention_2" and spec.objective.custom_attention_mask:
        raise UserError("model.attn_implementation", attention, "takes no custom attention mask, and the objective's packed layout needs one; set "
                        f"{'objective.share_prompt=false' if 'share_prompt' in spec.objective.collation else 'objective.pack_factor=0'} or use sdpa")


@register("trainer", "cpu")
@dataclass
class CPUTrainer(TrainerConfig):
    """One process on the CPU."""

    name: str = "cpu"


@register("trainer", "gpu")
@dataclass
class GPUTrainer(TrainerConfig):
    """One GPU, bf16 mixed precision."""

    name: str = "gpu"
    accelerator: str = "gpu"
    precision: str = "bf16-mixed"


@register("trainer", "ddp")
@dataclass
class DDPTrainer(TrainerConfig):
    """Data parallel, one process per device (launch through SLURM/submitit or torchrun for sweeps).

    On the CPU (gloo), as the tests run it: ``trainer=ddp trainer.accelerator=cpu trainer.devices=2
    trainer.precision=32-true trainer.threads=1``. What several processes guarantee (store, sampler,
    evaluation, rank 0 writes): README, "Several processes"."""

    name: str = "ddp"
    accelerator: str = "gpu"
    devices: Any = -1
    strategy: str = "ddp"
    precision: str = "bf16-mixed"


FSDP_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD")


@register("trainer", "fsdp")
@dataclass
class FSDPTrainer(TrainerConfig):
    """Fully sharded data parallel over all GPUs of the node, one decoder layer per FSDP unit, bf16 mixed precision."""

    name: str = "fsdp"
    accelerator: str = "gpu"
    devices: Any = -1
    strategy: str = "fsdp"
    precision: str = "bf16-mixed"
    sharding_strategy: str = "FULL_SHARD"
    """``FULL_SHARD`` (ZeRO-3-like: parameters, gradients, optimizer state), ``SHARD_GRAD_OP``
    (ZeRO-2-like; parameters still sharded between steps), ``HYBRID_SHARD`` (full shard within a
    node, replicas across nodes) or ``NO_SHARD`` (DDP)."""
    cpu_offload: bool = False
    """Keep the parameter shards in CPU memory between uses (slower; for models that do not fit)."""

    NOT_TRAINER_ARGS: ClassVar[tuple[str, ...]] = (*TrainerConfig.NOT_TRAINER_ARGS, "sharding_strategy", "cpu_offload")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.strategy == "fsdp", "trainer.strategy", self.strategy, "is fsdp in this profile (its fields are FSDP's); pick another trainer profile for other strategies")
        check(self.sharding_strategy in FSDP_SHARDING, "trainer.sharding_strategy", self.sharding_strategy, f"must be one of {list(FSDP_SHARDING)}")

    @property
    def shards_parameters(self) -> bool:
        return self.sharding_strategy != "NO_SHARD"

    @property
    def shards_optimizer_state(self) -> bool:
        return self.sharding_strategy != "NO_SHARD"

    def build_strategy(self, model: Any = None) -> Any:
        from pytorch_lightning.strategies import FSDPStrategy

        if model is None:
            raise TypeError("the FSDP profile wraps the model's decoder layers: pass model= to build()")
        # A single-file (full) checkpoint, so resuming, checkpoint-reading scorers and later stages
        # read it like any other run's.
        return FSDPStrategy(
            auto_wrap_policy=decoder_layer_classes(model), sharding_strategy=self.sharding_strategy,
            cpu_offload=self.cpu_offload, state_dict_type="full",
        )


@register("trainer", "deepspeed_zero2")
@dataclass
class DeepSpeedZero2(TrainerConfig):
    """DeepSpeed ZeRO stage 2 over all GPUs of the node: optimizer state and gradients sharded, parameters whole on every rank (pip install 'assay[deepspeed]')."""

    name: str = "deepspeed_zero2"
    accelerator: str = "gpu"
    devices: Any = -1
    strategy: str = "deepspeed_stage_2"
    precision: str = "bf16-mixed"


@register("trainer", "deepspeed_zero3")
@dataclass
class DeepSpeedZero3(TrainerConfig):
    """DeepSpeed ZeRO stage 3 over all GPUs of the node: parameters, gradients and optimizer state sharded (pip install 'assay[deepspeed]')."""

    name: str = "deepspeed_zero3"
    accelerator: str = "gpu"
    devices: Any = -1
    strategy: str = "deepspeed_stage_3"
    precision: str = "bf16-mixed"


def gathered_weights(trainer: Any, model: Any) -> Optional[dict[str, Any]]:
    """The whole model's weights when a strategy shards them (FSDP, DeepSpeed ZeRO-3), else None.

    A collective: every rank calls it after training. FSDP's full state dict is gathered to rank 0
    (the other ranks get an empty dict); ZeRO-3's parameters are gathered on every rank for the copy.
    Keys are the model's own (``model.`` of the LightningModule and the wrappers' prefixes removed),
    so ``save_pretrained(state_dict=...)`` writes a checkpoint any tool loads."""
    from pytorch_lightning.strategies import DeepSpeedStrategy, FSDPStrategy

    strategy = trainer.strategy
    if isinstance(strategy, FSDPStrategy):
        state = strategy.lightning_module_state_dict()
        return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return None

