"""The trainer against the machine its jobs will run on: this machine, or the share of a node a
SLURM launcher asks for. One line per problem (:class:`UserError`) before any job starts, and again
in the job itself, on the node it landed on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from assay.errors import UserError
from assay.trainers import requested_devices


@dataclass
class Machine:
    """What the jobs of a command will run on: this machine, or the nodes a SLURM launcher asks for."""

    where: str
    gpus: int
    cpus: int
    bf16: Optional[bool] = None
    """Whether the GPUs do bfloat16 (None: not known from here)."""
    local: bool = True
    gpu_name: str = "this GPU"


def this_machine() -> Machine:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cpus = os.cpu_count() or 1  # the node's cores (a SLURM task's affinity may hold fewer than its siblings share)
    return Machine("this machine", gpus, cpus, bf16=bool(gpus) and torch.cuda.is_bf16_supported(), gpu_name=torch.cuda.get_device_name(0) if gpus else "no GPU")


def launcher_machine(launcher: Any) -> Machine:
    """The job's share of a node as the launcher requests it (SLURM), else this machine."""
    if launcher is None or "SlurmLauncher" not in str(launcher.get("_target_", "")):
        return this_machine()
    gpus = int(launcher.get("gpus_per_node") or 0)
    cpus = int(launcher.get("cpus_per_task") or 1) * int(launcher.get("tasks_per_node") or 1)
    return Machine(f"the SLURM job (hydra.launcher.gpus_per_node={gpus})", gpus, cpus, bf16=None, local=False)


def check_trainer(spec: Any, machine: Optional[Machine] = None) -> None:
    """Before any job starts: the trainer's strategy is installed, its accelerator is present, it asks
    for no more devices than there are, its precision runs on that device, and what needs several
    processes gets them. One line each (:class:`UserError`)."""
    import importlib.util

    import torch

    machine = machine or this_machine()
    t = spec.trainer
    needed = t.info.requires
    if needed and importlib.util.find_spec(needed) is None:
        raise UserError("trainer.strategy", t.strategy, f"{needed} is not installed; pip install 'assay[{needed}]'")
    accelerator = t.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if machine.gpus else "cpu"
    if accelerator in ("gpu", "cuda") and machine.gpus == 0:
        if machine.local:
            build = f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None else "torch.cuda.is_available() is False"
            raise UserError("trainer.accelerator", t.accelerator, f"no CUDA GPU on {machine.where} ({build}); use trainer=cpu")
        raise UserError("trainer.accelerator", t.accelerator, f"{machine.where} gets no GPU; set hydra.launcher.gpus_per_node, or use trainer=cpu")
    if accelerator == "mps" and not (machine.local and torch.backends.mps.is_available()):
        raise UserError("trainer.accelerator", t.accelerator, f"no Apple MPS device on {machine.where}; use trainer=cpu")
    if accelerator == "tpu":
        from pytorch_lightning.accelerators import XLAAccelerator

        if not XLAAccelerator.is_available():
            raise UserError("trainer.accelerator", t.accelerator, f"no TPU (torch_xla) on {machine.where}")

    available = machine.gpus if accelerator in ("gpu", "cuda") else (1 if accelerator in ("mps", "tpu") else machine.cpus)
    unit = "GPU(s)" if accelerator in ("gpu", "cuda") else ("CPU core(s)" if accelerator == "cpu" else "device(s)")
    devices = requested_devices(t.devices)
    if isinstance(devices, list):
        missing = [i for i in devices if i >= available]
        if missing:
            raise UserError("trainer.devices", t.devices, f"{machine.where} has {available} {unit} (indices 0-{available - 1}); {missing} do not exist")
        count = len(devices)
    elif devices is None:
        count = available if accelerator in ("gpu", "cuda") else 1
    else:
        count = devices
        if count > available:
            raise UserError("trainer.devices", t.devices, f"{machine.where} has {available} {unit}; use at most {available} (or -1 for all)")

    precision = t.precision_name
    if accelerator in ("gpu", "cuda") and precision.startswith("bf16") and machine.bf16 is False:
        raise UserError("trainer.precision", t.precision, f"{machine.gpu_name} does not support bfloat16; use 16-mixed or 32-true")
    if precision.startswith("transformer-engine"):
        if accelerator not in ("gpu", "cuda"):
            raise UserError("trainer.precision", t.precision, "Transformer Engine runs on NVIDIA GPUs only; use bf16-mixed or 32-true")
        if importlib.util.find_spec("transformer_engine") is None:
            raise UserError("trainer.precision", t.precision, "transformer_engine is not installed; use bf16-mixed")
    if accelerator == "cpu" and precision == "16-mixed":
        raise UserError("trainer.precision", t.precision, "float16 autocast is not supported on the CPU; use bf16-mixed or 32-true")

    attention = getattr(spec.model, "attn_implementation", None)
    if attention == "flash_attention_2":
        if accelerator not in ("gpu", "cuda"):
            raise UserError("model.attn_implementation", attention, "runs on CUDA GPUs only; use sdpa")
        if importlib.util.find_spec("flash_attn") is None:
            raise UserError("model.attn_implementation", attention, "flash-attn is not installed (pip install flash-attn --no-build-isolation); use sdpa")
