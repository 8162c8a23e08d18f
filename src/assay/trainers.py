"""Trainer profiles (config group ``trainer``): the Lightning ``Trainer``, built via ``_target_``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import hydra
from omegaconf import MISSING

from assay.errors import check
from assay.registry import register


@dataclass
class TrainerConfig:
    _target_: str = "pytorch_lightning.Trainer"
    name: str = MISSING
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    max_steps: int = 2500
    """Optimizer steps; the run's length (epochs follow from the data size)."""
    max_epochs: int = -1
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

    def __post_init__(self) -> None:
        if self.threads is not None:
            check(self.threads > 0, "trainer.threads", self.threads, "must be a positive integer (or null)")
        check(self.max_steps > 0, "trainer.max_steps", self.max_steps, "must be a positive integer")
        check(valid_val_check_interval(self.val_check_interval), "trainer.val_check_interval", self.val_check_interval,
              "must be a positive number of training batches (int) or a fraction of an epoch in (0, 1] (float)")
        check(self.accumulate_grad_batches > 0, "trainer.accumulate_grad_batches", self.accumulate_grad_batches, "must be a positive integer")
        if self.gradient_clip_val is not None:
            check(self.gradient_clip_val > 0, "trainer.gradient_clip_val", self.gradient_clip_val, "must be > 0 (or null)")

    def apply_threads(self) -> None:
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)

    def build(self, **runtime: Any):
        self.apply_threads()
        kwargs = {k: v for k, v in asdict(self).items() if k not in ("name", "threads")}
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
    """Data parallel over all GPUs of the node (launch through SLURM/submitit or torchrun for sweeps)."""

    name: str = "ddp"
    accelerator: str = "gpu"
    devices: Any = -1
    strategy: str = "ddp"
    precision: str = "bf16-mixed"
