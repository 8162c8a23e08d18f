"""What a run prints and what its ``train.log`` holds.

The console shows what a user reads: assay's own lines (stages, resuming, the summary table, the
run directory), errors, and warnings raised by assay's code. Everything else the libraries say
(Lightning's accelerator lines and hints, Python warnings from any library, transformers and
datasets messages) goes to ``<run dir>/train.log`` only, together with assay's own lines and the
final metrics; progress bars of data mapping and checkpoint writing are off (the progress of a
run's own phases is ``assay.run.progress``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("assay")

FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
LIBRARY_LOGGERS = (
    "pytorch_lightning", "lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric",
    "transformers", "datasets", "py.warnings", "torch", "hydra", "submitit", "wandb", "peft",
)
"""Loggers that write to their own console handler; they are re-routed to the run's log."""

_TAG = "_assay_run_log"


class _Console(logging.Filter):
    """On the console: errors, and Python warnings raised by assay's own modules."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name == "py.warnings":
            return f"{Path('assay')}/" in record.getMessage().split(":", 1)[0].replace("\\", "/")
        return False


class _NotFileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def start_run_log(run_dir: Path) -> Path:
    """Send this process's log to ``run_dir/train.log`` (replacing the file of an earlier run or
    stage in the same process) and keep library chatter off the console. Returns the log's path."""
    path = (Path(run_dir) / "train.log").resolve()
    root = logging.getLogger()
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    for h in [h for h in root.handlers if getattr(h, _TAG, False)]:
        root.removeHandler(h)
        h.close()
    # Hydra's job logging already writes <run dir>/<job name>.log for a single run; reuse it.
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve() == path for h in root.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter(FORMAT))
        setattr(handler, _TAG, True)
        root.addHandler(handler)
    quiet_console()
    return path


def quiet_console() -> None:
    """Library chatter and Python warnings off the console, into the run's log where this process
    writes one (the other ranks of a multi-process run write none: their chatter goes nowhere).
    Among them: transformers' ``is_gradient_checkpointing`` FutureWarning (peft reads the deprecated
    name), Lightning's hint to use ``srun`` on a machine that has it, and its warning that a resumed
    dataloader is not resumable (assay's sampler is: its position is in every checkpoint)."""
    root = logging.getLogger()
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    _filter_consoles()
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        for h in [h for h in lib.handlers if _is_console(h)]:
            lib.removeHandler(h)
        lib.propagate = True
    logging.getLogger("pytorch_lightning").setLevel(logging.INFO)
    logging.getLogger("lightning.pytorch").setLevel(logging.INFO)
    logging.captureWarnings(True)
    _assay_console()
    _progress_bars_off()


def _filter_consoles() -> None:
    for h in logging.getLogger().handlers:
        if _is_console(h) and not any(isinstance(f, _Console) for f in h.filters):
            h.addFilter(_Console())


def _is_console(handler: logging.Handler) -> bool:
    """A handler that writes to the terminal (not a file, not a test harness's capture buffer)."""
    consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    return type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in consoles


def _assay_console() -> None:
    """assay's own lines: ``[assay] ...`` on stdout (and, through the root logger, in the file), once:
    not again in the format of a console handler of the root logger (Hydra's)."""
    _filter_consoles()
    log.setLevel(logging.INFO)
    if not any(getattr(h, _TAG, False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[assay] %(message)s"))
        handler.addFilter(_NotFileOnly())
        setattr(handler, _TAG, True)
        log.addHandler(handler)
    log.propagate = True


def _progress_bars_off() -> None:
    """Row-mapping bars of datasets and the shard-writing bar of transformers' save_pretrained."""
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def info(message: str, *args: Any) -> None:
    """A line for the console and the run's log."""
    _assay_console()
    log.info(message, *args)


def to_file(message: str, *args: Any) -> None:
    """A line for the run's log only (the console shows the same content another way)."""
    log.info(message, *args, extra={"file_only": True})
