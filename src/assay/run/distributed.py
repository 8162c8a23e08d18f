"""One run, several processes: who does what.

``assay-train trainer=ddp trainer.devices=N`` runs N processes (ranks). The guarantees:

- The ranks join one process group before any work (``start``): Lightning's own launcher starts the
  other local ranks (it re-runs the command with ``LOCAL_RANK`` set), or SLURM/torchrun started them;
  Lightning's DDP strategy then finds the group initialised and uses it.
- Work before training (reference log-probs, selection, each stage's preparation) runs on rank 0
  and reaches the others by broadcast or through the cache it wrote (``once``, ``rank_zero_first``):
  never computed and written by every rank at once.
- Only rank 0 writes run-level artefacts (``is_main``); each rank writes its own per-sample store
  parts.
- A failure on any rank fails the command: rank 0 waits for the ranks it started and exits non-zero
  when one of them did (``finish``); Lightning's process observer ends rank 0 when a rank dies
  mid-run.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional, TypeVar

from assay.lazy import torch

from assay.errors import UserError

T = TypeVar("T")
FINISH_TIMEOUT = timedelta(minutes=10)
"""How long a rank that finished waits for the others at the end before giving up."""

_launcher: Any = None  # Lightning's launcher on the rank that started the others (holds their processes)


def initialized() -> bool:
    if "torch" not in sys.modules:  # nothing can have joined a process group (keeps error paths light)
        return False
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if initialized() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if initialized() else 1


def is_main() -> bool:
    """True on the one process that writes run-level artefacts (rank 0; the only one without DDP)."""
    return rank() == 0


def planned_processes(trainer: Any) -> int:
    """How many processes a trainer config runs: devices × nodes (Lightning picks DDP for ``strategy=auto``
    on several devices), 1 for a single-device strategy."""
    if str(trainer.strategy) == "single_device":
        return 1
    devices = trainer.devices
    if isinstance(devices, (list, tuple)) or (hasattr(devices, "__len__") and not isinstance(devices, str)):
        count = len(devices)
    elif str(devices).lstrip("-").isdigit() and int(devices) > 0:
        count = int(devices)
    elif str(trainer.accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        count = torch.cuda.device_count()  # devices=-1 / "auto": every visible GPU
    else:
        count = 1
    return count * int(trainer.num_nodes)


def compute_device(trainer: Any) -> "torch.device":
    """Where work before training (reference log-probs, selection scoring) runs: this process's GPU
    when the trainer trains on GPUs (``LOCAL_RANK`` picks it under DDP), else the CPU."""
    if str(trainer.accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


@contextmanager
def on_device(model: Any, device: "torch.device") -> Iterator[Any]:
    """Run ``model`` on ``device`` inside the block and put it back where it was afterwards (the
    trainer then places it itself)."""
    params = list(model.parameters())
    home = params[0].device if params else torch.device("cpu")
    if device == home:
        yield model
        return
    model.to(device)
    try:
        yield model
    finally:
        model.to(home)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def check(spec: Any) -> None:
    """Cross-group checks of a multi-process run, before anything is built."""
    objective, trainer = spec.objective, spec.trainer
    if getattr(objective, "gathers_across_ranks", False) and planned_processes(trainer) < 2:
        raise UserError(
            "objective.aggregator.scope", "global",
            f"gathers Dr. DPO's losses across processes, and trainer={trainer.name} (strategy={trainer.strategy}, "
            f"devices={trainer.devices}) runs one; use objective.aggregator.scope=local or a multi-process trainer (trainer=ddp trainer.devices=2)",
        )
    if planned_processes(trainer) > 1 and "spawn" in str(trainer.strategy):
        raise UserError(
            "trainer.strategy", trainer.strategy,
            "spawn strategies re-run only the training loop in new processes; use strategy=ddp (one process per device)",
        )


def start(trainer: Any) -> None:
    """Start the other ranks (when this process is the one that launches them) and join the process
    group, before any data, model or selection work. Idempotent (stages of one command share it)."""
    global _launcher
    if planned_processes(trainer) < 2 or initialized():
        return
    import logging

    import pytorch_lightning as pl

    from assay.run.preemption import cluster_plugins

    quiet = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the real Trainer prints the same device lines again
    try:
        probe = pl.Trainer(
            accelerator=trainer.accelerator, devices=trainer.devices, strategy=trainer.strategy, num_nodes=trainer.num_nodes,
            precision=trainer.precision, plugins=cluster_plugins(), logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )
    finally:
        quiet.setLevel(level)
    strategy = probe.strategy
    if not strategy.cluster_environment.creates_processes_externally and _in_sweep():
        raise UserError(
            "trainer.devices", trainer.devices,
            "a local sweep (-m) cannot start several processes per job (each rank would re-run the whole sweep); "
            "put the sweep on SLURM with hydra/launcher=slurm_ddp (one task per device), or run its jobs one at a time",
        )
    if strategy.launcher is not None:
        # Lightning's subprocess launcher re-runs this command with LOCAL_RANK=1..N-1 (once: a later
        # Trainer in this process sees LOCAL_RANK and starts nobody); under SLURM or torchrun it only checks.
        strategy.launcher.launch(lambda: None)
        if getattr(strategy.launcher, "procs", None):
            _launcher = strategy.launcher
    strategy.setup_environment()  # device + init_process_group; the real Trainer's strategy then skips both


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def once(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0 only; every rank returns its (picklable) result. A user error on rank
    0 is raised on every rank, so all exit with the same one line and code."""
    if not initialized():
        return compute()
    message: list[Any] = [None]
    if is_main():
        try:
            message = [("ok", compute())]
        except UserError as e:
            message = [("user_error", (e.field, e.value, e.allowed))]
            torch.distributed.broadcast_object_list(message, src=0)
            raise
        except BaseException as e:
            message = [("error", f"{type(e).__name__}: {e}")]
            torch.distributed.broadcast_object_list(message, src=0)
            raise
    torch.distributed.broadcast_object_list(message, src=0)
    kind, payload = message[0]
    if kind == "user_error":
        raise UserError(*payload)
    if kind == "error":
        raise RuntimeError(f"rank 0 failed before training: {payload}")
    return payload


def rank_zero_first(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0, then on the other ranks, which find what rank 0 cached on disk
    (reference log-probs: the other ranks read every value from rank 0's cache file)."""
    if not initialized():
        return compute()
    if is_main():
        box: list[T] = []
        once(lambda: box.append(compute()))
        return box[0]
    once(lambda: None)  # waits for rank 0 (and raises its error)
    return compute()


def finish(ok: bool) -> int:
    """End of the command on this rank: wait for every rank at a barrier, tear the group down, and
    on the rank that started the others, wait for them. Returns the exit code this process should
    have (non-zero when it, or a rank it started, failed)."""
    global _launcher
    code = 0 if ok else 1
    if initialized():
        try:
            if ok:
                # Every rank is done with gloo before any tears it down: a rank that destroys the group
                # while a peer still has a pending send aborts the peer (SIGABRT).
                if torch.distributed.get_backend() == "gloo":
                    torch.distributed.monitored_barrier(timeout=FINISH_TIMEOUT)
                else:
                    torch.distributed.barrier()
        except RuntimeError as e:
            print(f"error: a rank did not finish: {e}", flush=True)
            code = 1
        finally:
            if ok and code == 0:
                torch.distributed.destroy_process_group()
    if _launcher is not None and not ok:
        for proc in _launcher.procs:  # they cannot finish without this rank: do not leave them waiting in a collective
            if proc.poll() is None:
                proc.kill()
    if _launcher is not None:
        for proc in _launcher.procs:
            rc = proc.wait()
            if rc != 0:
                print(f"error: rank process {proc.pid} exited with code {rc}", flush=True)
                code = code or 1
        _launcher = None
    return code


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (one element without a process group)."""
    if not initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def rank_of(trainer: Optional[Any]) -> tuple[int, int]:
    """(global rank, world size) of a Lightning trainer, (0, 1) without one."""
    if trainer is None:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)
