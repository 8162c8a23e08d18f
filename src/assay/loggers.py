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
        # The run directory already holds Hydra's train.log and config.yaml: that is intended.
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        step, pending = _checkpoint_step_and_row(context.get("resume_from"))
        return history_csv_logger(run_dir, step, pending)


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

        offline = self.offline if self.offline is not None else not has_wandb_credentials()
        tags = [f"{g}:{c}" for g, c in sorted(context.get("choices", {}).items()) if c is not None] + list(self.tags)
        logger = WandbLogger(
            project=self.project,
            entity=self.entity,
            group=self.group or context.get("group"),
            job_type=self.job_type or context.get("stage"),
            name=context.get("run_name"),
            tags=tags[:64],
            save_dir=str(run_dir),
            offline=offline,
            config=context.get("config"),
            # a resumed run continues its wandb run (Lightning asks wandb for resume="allow" by id)
            id=earlier_wandb_id(run_dir) if context.get("resume_from") else None,
        )
        # Lightning passes anonymous=None, which wandb now reports on the console as a setting without effect
        logger._wandb_init.pop("anonymous", None)
        return logger


def earlier_wandb_id(run_dir: Path) -> Optional[str]:
    """The wandb run id of a run directory's latest wandb run (``wandb/<offline-run|run>-<time>-<id>``)."""
    found = sorted((p.name.split("run-", 1)[1] for p in (run_dir / "wandb").glob("*run-*-*") if p.is_dir()))  # <time>-<id>, by time
    return found[-1].rsplit("-", 1)[-1] if found else None


PENDING_ROW = "assay_pending_log_row"


def pending_log_row(trainer) -> Optional[dict[str, Any]]:
    """The training row Lightning logs for the batch being checkpointed. A step checkpoint is written
    in ``on_train_batch_end``, before Lightning logs that batch's row, so a kill between the two would
    lose the row; the checkpoint carries it instead (``history_csv_logger`` restores it)."""
    from lightning_fabric.utilities.apply_func import convert_tensors_to_scalars

    connector, loop = trainer._logger_connector, trainer.fit_loop
    if not trainer.training or loop._should_accumulate() or not connector.should_update_logs:
        return None
    row = convert_tensors_to_scalars(dict(connector.metrics["log"]))
    if not row:
        return None
    row.setdefault("epoch", trainer.current_epoch)
    return {**row, "step": loop.epoch_loop._batches_that_stepped}


def _checkpoint_step_and_row(path: Optional[str]) -> tuple[int, Optional[dict[str, Any]]]:
    """The optimizer step a checkpoint was saved at (0 for a fresh start) and its pending log row."""
    if not path:
        return 0, None
    import torch

    ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    return int(ckpt.get("global_step", 0)), ckpt.get(PENDING_ROW)


def history_csv_logger(run_dir: Path, resume_step: int, pending_row: Optional[dict[str, Any]] = None):
    """Lightning's CSVLogger, except that an existing ``metrics.csv`` is continued, not deleted: rows
    logged before ``resume_step`` (the checkpoint's step) are kept, rows of the steps the resumed run
    does again are dropped, so a resumed run's file reads like an uninterrupted run's; the
    checkpoint's ``pending_row`` (see ``pending_log_row``) fills in the row a kill may have cut off.
    Nothing is written until the resumed run logs its first row (a resume refused on the way leaves
    the file)."""
    import csv

    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.loggers.csv_logs import ExperimentWriter
    from pytorch_lightning.loggers.logger import rank_zero_experiment

    class HistoryWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            self._earlier: list[dict[str, str]] = []
            self._continue = self._fs.isfile(self.metrics_file_path)
            if self._continue:
                with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                    reader = csv.DictReader(f)
                    rows = list(reader)
                    keys = list(reader.fieldnames or [])
                self._earlier = [r for r in rows if r.get("step") not in (None, "") and int(float(r["step"])) < resume_step]
                if pending_row is not None and not any(int(float(r["step"])) == pending_row["step"] and _same_keys(r, pending_row) for r in self._earlier):
                    self._earlier.append({k: v for k, v in pending_row.items()})
                    keys = list(dict.fromkeys([*keys, *pending_row]))
                self.metrics_keys = sorted(keys)

        def save(self) -> None:
            if not (self._continue and self.metrics):
                return super().save()
            self._record_new_keys()
            tmp = f"{self.metrics_file_path}.tmp"
            with self._fs.open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(self._earlier)
                writer.writerows(self.metrics)
            os.replace(tmp, self.metrics_file_path)
            self.metrics, self._earlier, self._continue = [], [], False

    class HistoryCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self):
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = HistoryWriter(log_dir=self.log_dir)
            return self._experiment

    return HistoryCSVLogger(save_dir=str(run_dir), name="", version="")


def _same_keys(row: dict[str, str], pending: dict[str, Any]) -> bool:
    """A CSV row is the pending row's if it has a value for every key the pending row has."""
    return all(row.get(k) not in (None, "") for k in pending)


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_location(logger: Any) -> dict[str, Any]:
    """Where a wandb logger wrote its run (the directory ``wandb sync`` uploads), for the summary
    and the console; empty for any other logger."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return {}
    run = logger.experiment
    run_dir = Path(run.dir).parent  # <save_dir>/wandb/<offline-run-...>/files -> the run's directory
    offline = bool(getattr(logger, "_offline", False)) or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
    return {"wandb": {"dir": str(run_dir), "offline": offline, "id": run.id}}
