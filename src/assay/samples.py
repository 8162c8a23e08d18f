"""Sample prompts (``eval.sample_prompts``): a fixed list of prompts answered greedily at every
validation and once more after the last training step, so a user watches what the model says as it
trains, as other trainers' generation callbacks show it.

Each prompt is rendered exactly as the run's training prompts are (``data.tokenize_split``: the
model's chat template for conversation data or ``data.chat_template=always``, else the plain prompt)
and answered with ``eval.max_new_tokens`` greedy tokens. The answers go to the console (one line
each), to ``<run>/samples.csv`` (step, prompt, answer; a resumed run appends) and, with
``logger=wandb``, to a wandb table ``samples`` (all rows so far, one version per step).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from assay.run import log as runlog

FILE = "samples.csv"


class SamplePrompts(pl.Callback):
    def __init__(self, prompts: list[str], tokenizer: Any, data: Any, conversations: bool, max_new_tokens: int, run_dir: Path):
        """``conversations``: the run trains on conversation rows (their prompts are rendered as a user turn)."""
        import datasets

        from assay.data.collate import tokenize_split

        rows = {"prompt": list(prompts), "completion": [""] * len(prompts)}
        if conversations:
            rows["prompt_messages"] = [[{"role": "user", "content": p}] for p in prompts]
        ds = tokenize_split(datasets.Dataset.from_dict(rows), tokenizer, "sft", data.separator, data.max_length, data.chat_template)
        self.prompts, self.prompt_ids = list(prompts), [list(p) for p in ds["prompt_ids"]]
        self.tokenizer, self.max_new_tokens, self.file = tokenizer, max_new_tokens, run_dir / FILE
        self.table: list[list[Any]] = []
        self._last_step = -1
        if self.file.is_file():  # a resumed run: its earlier rows, and no second row for the step it stopped at
            with self.file.open(newline="") as f:
                self.table = [[int(r["step"]), r["prompt"], r["answer"]] for r in csv.DictReader(f)]
            self._last_step = max((r[0] for r in self.table), default=-1)

    def answers(self, model) -> list[str]:
        """Greedy answers, the prompts left-padded into one batch (as the held-out generations are)."""
        from assay.data.collate import pad_left
        from assay.models.passes import eval_mode, generate_texts, model_device

        batch = pad_left(self.prompt_ids, self.tokenizer.pad_token_id)
        device = model_device(model)
        with eval_mode(model):
            return generate_texts(model, self.tokenizer, batch["prompt_input_ids"].to(device), batch["prompt_attention_mask"].to(device),
                                  self.max_new_tokens)

    def record(self, trainer: pl.Trainer, model) -> None:
        step = int(trainer.global_step)
        if step == self._last_step or trainer.sanity_checking:
            return
        self._last_step = step
        answers = self.answers(model)  # every rank generates (the model may be sharded); rank 0 writes
        if trainer.global_rank != 0:
            return
        rows = [[step, p, a.strip()] for p, a in zip(self.prompts, answers)]
        for _, prompt, answer in rows:
            runlog.info("sample at step %d: %r -> %r", step, prompt, answer)
        new = not self.file.exists()
        with self.file.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "prompt", "answer"])
            writer.writerows(rows)
        self.table += rows
        from pytorch_lightning.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text(key="samples", columns=["step", "prompt", "answer"], data=self.table, step=step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, pl_module.model)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record(trainer, pl_module.model)
