"""The Trainer's progress callbacks (:func:`lightning_progress` chooses one).

``StepBoundProgressBar`` is Lightning's Rich bar with three things fixed for a run bounded by
steps: no ``Epoch 0/-2``; a total that counts the batches this epoch will really run, also after a
resume in the middle of an epoch (Lightning caps the bar at the steps left but counts batches from the
resumed position, so a resumed run showed ``24/6``; and it compares optimizer steps with batches
under gradient accumulation); and a speed and ETA from the mean rate since the bar started, in
seconds per batch when a batch takes longer than a second (Rich's own speed looks back 30 seconds,
so slow steps showed ``0.00it/s`` and ETA ``-:--:--``).

``PlainLoopProgress`` prints plain lines (``assay.run.progress.Progress``) for training, validation
and testing when the console is not a terminal.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar
from rich.progress import ProgressColumn, TextColumn
from rich.text import Text

from assay.run.progress import Progress, Rate, clock, interactive, rate_text, set_enabled


def lightning_progress(enabled: bool) -> list:
    """The Trainer's progress callback (``trainer.enable_progress_bar``): the Rich bar on a terminal,
    plain lines otherwise, none when disabled (which also silences the phases before training)."""
    set_enabled(enabled)
    if not enabled:
        return []
    return [StepBoundProgressBar()] if interactive(sys.stdout) else [PlainLoopProgress()]


def _step_bound(trainer: Any) -> bool:
    return trainer.max_epochs is not None and trainer.max_epochs < 0 and trainer.max_steps is not None and trainer.max_steps > 0


def batches_left(trainer: Any) -> float:
    """Training batches until ``max_steps``, however many batches make one optimizer step."""
    return (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches


class _RateColumn(ProgressColumn):
    """``elapsed • ETA  rate`` from the bar's mean rate since it (re)started."""

    def __init__(self, bar: "StepBoundProgressBar", style: Any):
        self.bar, self.style = bar, style
        super().__init__()

    def render(self, task: Any) -> Text:
        rate = self.bar.rates.get(task.id)
        per_second = rate.per_second if rate is not None else None
        left = None
        if per_second and task.total not in (None, float("inf")):
            left = max(0.0, task.total - task.completed) / per_second
        elapsed = task.finished_time if task.finished else task.elapsed
        return Text(f"{clock(elapsed)} • {clock(left)} {rate_text(per_second, sep='')}", style=self.style)


class StepBoundProgressBar(RichProgressBar):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rates: dict[Any, Rate] = {}
        self._done_before = 0
        """Batches of the current epoch run before this bar started (a resumed epoch)."""

    @property
    def total_train_batches(self) -> float:
        trainer = self.trainer
        if _step_bound(trainer):
            return min(trainer.num_training_batches, self._done_before + batches_left(trainer))
        return trainer.num_training_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
            description = f"Epoch {current_epoch}"
            return f"{description:{len(self.validation_description)}}"
        return super()._get_train_description(current_epoch)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._done_before = 0
        super().on_train_epoch_start(trainer, pl_module)
        if self.train_progress_bar_id is not None:
            self.rates[self.train_progress_bar_id] = Rate(self.total_train_batches)

    def _initialize_train_progress_bar_id(self) -> None:
        # Lightning calls this at the end of the first batch after a resume in the middle of an epoch
        # (on_train_epoch_start is skipped then): that batch and those before it are already done.
        self._done_before = self.trainer.fit_loop.epoch_loop.batch_progress.current.ready
        super()._initialize_train_progress_bar_id()
        self.rates[self.train_progress_bar_id] = Rate(self.total_train_batches, initial=self._done_before)

    def _add_task(self, total_batches: Any, description: str, visible: bool = True) -> Any:
        task = super()._add_task(total_batches, description, visible)
        self.rates[task] = Rate(total_batches)
        return task

    def _update(self, progress_bar_id: Optional[Any], current: int, visible: bool = True, hard: bool = False) -> None:
        rate = self.rates.get(progress_bar_id)
        if rate is not None:
            rate.done = current
        super()._update(progress_bar_id, current, visible, hard)

    def configure_columns(self, trainer: Any) -> list:
        from pytorch_lightning.callbacks.progress.rich_progress import BatchesProcessedColumn, CustomBarColumn

        return [
            TextColumn("[progress.description]{task.description}"),
            CustomBarColumn(complete_style=self.theme.progress_bar, finished_style=self.theme.progress_bar_finished,
                            pulse_style=self.theme.progress_bar_pulse),
            BatchesProcessedColumn(style=self.theme.batch_progress),
            _RateColumn(self, self.theme.time),
        ]


class PlainLoopProgress(ProgressBar):
    """A line at every tenth of training (in optimizer steps, with the loss) and of the test
    (generation and KL included), at every quarter of each validation, once a loop has run a few
    seconds."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._train: Optional[Progress] = None
        self._eval: Optional[Progress] = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        self._train = Progress("training", total, unit="step", initial=trainer.global_step, plain=True, disable=self.is_disabled)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._train is not None and trainer.global_step > self._train.rate.done:
            loss = self.get_metrics(trainer, pl_module).get("train/loss")
            self._train.set(trainer.global_step, **({"train/loss": float(loss)} if loss is not None else {}))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._train is not None:
            self._train.close()

    def _start_eval(self, desc: str, batches: Any, lines: int) -> None:
        total = sum(batches) if isinstance(batches, (list, tuple)) else batches
        self._eval = Progress(desc, total if total != float("inf") else None, plain=True, disable=self.is_disabled, lines=lines)

    def _step_eval(self) -> None:
        if self._eval is not None:
            self._eval.update()

    def _end_eval(self) -> None:
        if self._eval is not None:
            self._eval.close()
            self._eval = None

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._start_eval("validating", trainer.num_val_batches, lines=4)  # one of many: fewer lines

    def on_validation_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        self._step_eval()

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._end_eval()

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start_eval("testing", trainer.num_test_batches, lines=10)

    def on_test_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        self._step_eval()

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._end_eval()
