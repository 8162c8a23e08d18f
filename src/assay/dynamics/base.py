"""What every option of config group ``dynamics`` provides: the Lightning callbacks that write a run's
per-sample records, and what the recording needs (data formats, per-sample gradients)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omegaconf import MISSING


@dataclass
class DynamicsConfig:
    name: str = MISSING
    data_formats: ClassVar[tuple[str, ...]] = ("sft", "preference", "unpaired")
    """The data formats whose batches these dynamics can record."""
    per_sample_gradients: ClassVar[bool] = False
    """True when recording forms per-sample gradients over whole parameters (refused under strategies that shard them)."""

    def callbacks(self, run_dir) -> list:
        return []
