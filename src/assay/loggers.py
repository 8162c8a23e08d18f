"""Experiment loggers (config group ``logger``)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from assay.registry import register


@dataclass
class LoggerConfig:
    name: str = MISSING

    def build(self, run_dir: Path, context: dict[str, Any]) -> Any:
        """A Lightning logger, or False for none. ``context`` has the run's name, sweep, stage and choices."""
        return False


@register("logger", "none")
@dataclass
class NoLogger(LoggerConfig):
    """No experiment logger (summary.json and the per-sample store are still written)."""

    name: str = "none"


@register("logger", "csv")
@dataclass
class CSVLoggerConfig(LoggerConfig):
    """Metrics as CSV in the run directory (metrics.csv)."""

    name: str = "csv"

    def build(self, run_dir: Path, context: dict[str, Any]):
        from pytorch_lightning.loggers import CSVLogger

        # The run directory already holds Hydra's train.log and config.yaml: that is intended.
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        return CSVLogger(save_dir=str(run_dir), name="", version="")


@register("logger", "wandb")
@dataclass
class WandbLoggerConfig(LoggerConfig):
    """Weights & Biases; offline when no API key is configured (sync later with `wandb sync`)."""

    name: str = "wandb"
    project: str = "assay"
    entity: Optional[str] = None
    group: Optional[str] = None
    """Default: the sweep directory's name for multiruns, else the run's name."""
    job_type: Optional[str] = None
    """Default: the stage (e.g. sft, dpo)."""
    tags: list[str] = field(default_factory=list)
    """Added to the automatic tags: one ``group:choice`` per config group."""
    offline: Optional[bool] = None
    """None = offline exactly when no API key is found (WANDB_API_KEY or a netrc login)."""

    def build(self, run_dir: Path, context: dict[str, Any]):
        from pytorch_lightning.loggers import WandbLogger

        offline = self.offline if self.offline is not None else not _has_wandb_credentials()
        tags = [f"{g}:{c}" for g, c in sorted(context.get("choices", {}).items()) if c is not None] + list(self.tags)
        return WandbLogger(
            project=self.project,
            entity=self.entity,
            group=self.group or context.get("group"),
            job_type=self.job_type or context.get("stage"),
            name=context.get("run_name"),
            tags=tags[:64],
            save_dir=str(run_dir),
            offline=offline,
            config=context.get("config"),
        )


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False
