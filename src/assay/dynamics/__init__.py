"""Training dynamics (config group ``dynamics``): Lightning callbacks that write per-sample records."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from assay.errors import check
from assay.registry import register


@dataclass
class DynamicsConfig:
    name: str = MISSING

    def callbacks(self, run_dir) -> list:
        return []


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
