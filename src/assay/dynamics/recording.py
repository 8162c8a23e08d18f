"""The options of config group ``dynamics``, what a run records per sample: nothing (``off``), losses
and confidences (``losses``), or those plus per-sample gradient norms and projected gradients
(``gradients``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from assay.dynamics.base import DynamicsConfig
from assay.errors import check
from assay.registry import register


@register("dynamics", "off")
@dataclass
class DynamicsOff(DynamicsConfig):
    """Record nothing per sample."""

    name: str = "off"


@register("dynamics", "losses")
@dataclass
class LossDynamics(DynamicsConfig):
    """Per-sample loss and confidence (and every per-sample metric of the objective) at each step."""

    name: str = "losses"
    every_n_steps: int = 1
    """Record every n-th optimizer step (1 = every step the sample is seen)."""
    flush_every: int = 200
    """Steps between writes of a Parquet part file."""

    def __post_init__(self) -> None:
        check(self.every_n_steps > 0, "dynamics.every_n_steps", self.every_n_steps, "must be a positive integer")
        check(self.flush_every > 0, "dynamics.flush_every", self.flush_every, "must be a positive integer")

    def callbacks(self, run_dir) -> list:
        from assay.dynamics.callbacks import PerSampleRecorder
        from assay.dynamics.store import PerSampleStore

        return [PerSampleRecorder(PerSampleStore(run_dir / "dynamics"), self.every_n_steps, self.flush_every)]


@register("dynamics", "gradients")
@dataclass
class GradientDynamics(LossDynamics):
    """``losses`` plus per-sample gradient norms and projected gradients at chosen steps.

    For the batch trained at each chosen step: the gradient norm over ``params`` (GraNd) and a
    seeded random projection of the gradient to ``proj_dim`` (LESS / CLUES features), optionally
    Adam-preconditioned with the optimizer's moments at that step. Records land in
    ``<run>/dynamics/gradients``: a Parquet index (id, step, epoch, grad_norm, noise flags) and a
    memory-mapped float32 array per part (``assay.dynamics.store.read_gradients``). The gradient is that of each row's mean response NLL,
    so these dynamics need SFT-format batches."""

    name: str = "gradients"
    per_sample_gradients: ClassVar[bool] = True
    grad_every_n_steps: int = 50
    """Record gradients of the batch of every n-th optimizer step (0 = only at ``grad_steps``)."""
    grad_steps: list[int] = field(default_factory=list)
    """Further optimizer steps to record at (e.g. the steps checkpoints are written at)."""
    params: list[str] = field(default_factory=list)
    """Name substrings of the parameters the gradients are taken over (e.g. ``[lm_head]``, ``[layers.1.]``);
    empty = the LoRA adapters when the model has them, else the last decoder layer."""
    proj_dim: int = 8192
    """Random-projection dimension k (0 = store the exact gradients)."""
    projection: str = "sjlt"
    """``sjlt`` (sparse Johnson-Lindenstrauss) or ``rademacher`` (the dense map of TRAK / LESS); see
    ``selection.projection``. The same seeded map at every step, so features compare across steps."""
    seed: int = 0
    """Seed of the projection map."""
    adam: bool = False
    """Precondition with the optimizer's Adam moments at that step (LESS's Γ) before projecting."""
    batch_size: int = 16
    """Rows per batched per-sample-gradient pass (bounds the [rows, parameters] buffer)."""
    data_formats: ClassVar[tuple[str, ...]] = ("sft",)

    def __post_init__(self) -> None:
        from assay.models.projection import PROJECTIONS

        super().__post_init__()
        check(self.grad_every_n_steps >= 0, "dynamics.grad_every_n_steps", self.grad_every_n_steps, "must be >= 0 (0 = only at dynamics.grad_steps)")
        check(all(s > 0 for s in self.grad_steps), "dynamics.grad_steps", list(self.grad_steps), "must be optimizer steps >= 1")
        check(
            self.grad_every_n_steps > 0 or len(self.grad_steps) > 0,
            "dynamics.grad_every_n_steps",
            self.grad_every_n_steps,
            "with no dynamics.grad_steps either, no gradient would be recorded; set one of them, or use dynamics=losses",
        )
        check(self.proj_dim >= 0, "dynamics.proj_dim", self.proj_dim, "must be >= 0 (0 = the exact gradients)")
        check(self.projection in PROJECTIONS, "dynamics.projection", self.projection, f"must be one of {list(PROJECTIONS)}")
        check(self.batch_size > 0, "dynamics.batch_size", self.batch_size, "must be a positive integer")

    def callbacks(self, run_dir) -> list:
        from assay.dynamics.callbacks import GradientRecorder
        from assay.dynamics.store import GradientStore

        recorder = GradientRecorder(
            GradientStore(run_dir / "dynamics" / "gradients"), self.grad_every_n_steps, self.grad_steps, self.params,
            self.proj_dim, self.projection, self.seed, self.adam, self.batch_size, self.flush_every,
        )
        return [*super().callbacks(run_dir), recorder]
