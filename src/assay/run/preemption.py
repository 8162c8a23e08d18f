"""Surviving preemption, time limits and hard kills.

A cluster job can end three ways before it finishes: SLURM sends a signal ahead of the time limit or
a preemption (submitit asks for SIGUSR2; plain sbatch setups often use SIGUSR1), SLURM sends SIGTERM
before a SIGKILL, or the node dies. For the first two, :class:`PreemptionCheckpoint` writes
``last.ckpt`` at the next batch boundary (the only point where model, optimizer, scheduler, sampler
position and per-sample store agree) and then hands the signal on, so submitit requeues the very same
job pickle, which lands in the same run directory and resumes from that checkpoint. For the third,
checkpoints are written atomically (:class:`AtomicCheckpointIO`), so a kill mid-write leaves the
previous checkpoint intact instead of a truncated file that cannot be resumed.

Lightning's own SLURM requeue is switched off (``SLURMEnvironment(auto_requeue=False)``): with two
requeue mechanisms a preempted job can be requeued twice or by the one that did not checkpoint.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from assay.errors import UserError


def requeue_signals() -> list[signal.Signals]:
    """The signals that mean "stop soon, you will be requeued": submitit's (USR2 unless
    SUBMITIT_PREEMPT_SIGNAL says otherwise), USR1 (the usual ``sbatch --signal``), and TERM."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    sigs = [getattr(signal, f"SIG{name}", signal.SIGUSR2), signal.SIGUSR1, signal.SIGTERM]
    return list(dict.fromkeys(sigs))


def agreed_signal(pending: int | None, device: Any = "cpu") -> int | None:
    """The requeue signal every rank acts on at this batch boundary, or None.

    SLURM signals each task of a multi-process job on its own, so the ranks can see it at different
    batches; a checkpoint is a collective that must happen at the same batch on every rank. So the
    ranks agree (all-reduce max of the pending signal number, one scalar per batch, only when there
    are several processes): if any rank has a signal, all checkpoint now."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return pending
    flag = torch.tensor([pending or 0], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


class PreemptionCheckpoint(pl.Callback):
    """On a requeue signal: checkpoint at the next batch boundary, then pass the signal on to whoever
    handled it before (submitit requeues and exits; without a handler, the default action ends the
    process). RNG states travel in every checkpoint so a resumed run draws the same numbers."""

    def __init__(self, last_ckpt: Path):
        self.last_ckpt = Path(last_ckpt)
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    # ---- signals --------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in requeue_signals():
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._note)

    def _note(self, signum: int, frame) -> None:
        self.pending = signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        signum = agreed_signal(self.pending, pl_module.device)
        if signum is None:
            return
        self.pending = None
        trainer.save_checkpoint(self.last_ckpt)
        print(f"[assay] caught {signal.Signals(signum).name}: saved {self.last_ckpt} at step {trainer.global_step}", flush=True)
        self._restore()
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, None)  # submitit: checkpoint the job pickle, scontrol requeue, exit
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            try:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self._previous = {}

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    # ---- RNG state ------------------------------------------------------------------------------
    # Plain tensors, ints and lists only, so the checkpoint still loads with torch.load(weights_only=True).
    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        import random

        import numpy as np
        import torch

        from assay.loggers import PENDING_ROW, pending_log_row

        row = pending_log_row(trainer)
        if row is not None:
            checkpoint[PENDING_ROW] = row
        np_state = np.random.get_state()
        checkpoint["assay_rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype("int64")), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        import random

        import numpy as np
        import torch

        state = checkpoint.get("assay_rng")
        if not state:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, then rename: a job killed while saving keeps its previous checkpoint.
    A save that fails (a full disk) removes its partial file and names the checkpoint, not the
    temporary path."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise OSError(e.errno, e.strerror or str(e), str(path)) from e
            raise
        os.replace(tmp, path)


def in_slurm_allocation() -> bool:
    """True inside a SLURM job step that runs this process (sbatch or srun): SLURM set the task
    count and the job is not an interactive shell allocation (SLURM's convention, which Lightning
    follows too: a job named ``bash`` or ``interactive`` launches its processes itself)."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def cluster_environment() -> Any:
    """The cluster environment, decided here rather than guessed by Lightning: torchrun's when it
    launched us, SLURM's (auto-requeue off) inside an allocation, else a plain local environment.

    Lightning's own guess probes SLURM on every Trainer and at every ``fit``/``test``, and on any
    machine with ``srun`` on PATH (every cluster login node) warns to use ``srun``. Outside an
    allocation that hint is wrong for assay (it launches jobs through submitit or sbatch itself): like
    every library warning it goes to the run's ``train.log``, not the console (``assay.run.log``)."""
    from lightning_fabric.plugins.environments import LightningEnvironment, LSFEnvironment, MPIEnvironment, SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return TorchElasticEnvironment()
    if in_slurm_allocation():
        return SLURMEnvironment(auto_requeue=False)
    for other in (LSFEnvironment, MPIEnvironment):  # the rest of Lightning's own order
        if other.detect():
            return other()
    return LightningEnvironment()


def cluster_plugins() -> list[Any]:
    """Trainer plugins: atomic checkpoints and the cluster environment (:func:`cluster_environment`)."""
    return [AtomicCheckpointIO(), cluster_environment()]


def requeued() -> bool:
    """True in a SLURM job that was requeued (preempted or timed out, then started again)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
    except ValueError:
        return False


class Diverged(UserError):
    """The training loss became NaN or infinite: the run ends ``diverged``, never ``completed``."""

    status = "diverged"

    def __init__(self, step: int, loss: float, lr: Any):
        super().__init__("train/loss", loss, f"non-finite at step {step}: the run diverged; lower optim.lr (now {lr}) "
                         "or clip gradients (trainer.gradient_clip_val)")


class DivergenceGuard(pl.Callback):
    """Stop a run whose loss is no longer finite. Checked on the steps the logger writes and on the
    last step (one host sync each, not one per step): NaN weights stay NaN, so a divergence is
    caught by the next check at the latest."""

    def __init__(self, every: int, lr: Any):
        self.every, self.lr = max(1, int(every)), lr

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every and step < (trainer.max_steps or 0):
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not bool(loss.detach().isfinite().all()):
            raise Diverged(step, float(loss.detach().float().mean()), self.lr)
