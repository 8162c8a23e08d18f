"""The one LightningModule: forward -> objective (per sample) -> aggregate -> log."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from functools import partial

import pytorch_lightning as pl
import torch

from assay.config import EvalConfig, OptimConfig
from assay.data.rewards import skill_reward
from assay.data.text import normalise_answer
from assay.errors import UserError
from assay.run.frozen_base import drop_frozen, restore_frozen
from assay.objectives.base import ObjectiveConfig

# Evaluation metrics are gathered across ranks before they are logged (``_log_eval``).
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")


RATIOS = {"kl_ref": ("_kl_ref_sum", "_kl_ref_tokens")}
"""Evaluation metrics that are ratios of two per-sample sums (a token mean pooled over the split)."""


class AssayModule(pl.LightningModule):
    def __init__(self, model, tokenizer, objective: ObjectiveConfig, optim: OptimConfig, evaluation: EvalConfig, reference=None):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        # The weights training started from (assay.heldout.ReferenceWeights): loaded for the test only,
        # where the policy is compared with it (win rate, KL); None skips those metrics.
        self.reference_weights = reference
        self._reference = None
        self._generations: list[dict] = []
        self.generations_dir = None  # where the test generations go (the run directory; set by assay.train)
        self.objective, self.optim, self.evaluation = objective, optim, evaluation
        self._eval_sums: dict[str, list] = defaultdict(list)
        # Running statistics of a dynamic objective (β-DPO), as buffers: saved in every checkpoint.
        self.controller = objective.build_controller()
        # TR-DPO's live reference: a frozen copy of the policy that follows it (objective.ref_sync), outside
        # the optimizer and in every checkpoint; None for a precomputed (or no) reference.
        build = getattr(objective, "build_live_reference", None)
        self.live_reference = build(model) if build is not None else None
        self.reweighting = None
        self.batch_selection = None  # a per-batch selector (assay.batch_selection): trains on a subset of each drawn batch

    def with_reference(self, batch: dict) -> dict:
        """The batch with the live reference's log-probs (TR-DPO); unchanged without one."""
        if self.live_reference is None:
            return batch
        return self.live_reference.attach(batch, heads=getattr(self.objective, "ld_alpha", None) is not None)

    def training_step(self, batch: dict, batch_idx: int):
        self._plan_optimizer_batch(batch, batch_idx)
        batch = self.with_reference(batch)
        out = self.objective.compute(self.model, batch, training=True, controller=self.controller)
        if self.reweighting is None:
            loss = self.objective.aggregate(out)
        else:  # DoReMi's proxy: per-token loss reweighted by the domain weights (assay.mixing.doremi)
            step_ends = (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0
            loss = self.reweighting(out, batch, step_ends, self.global_step)
        n = len(batch["ids"])
        writes = self._logger_writes_this_step()
        if writes or self._shows_progress_bar():
            self.log("train/loss", loss, prog_bar=True, batch_size=n)
        if writes:
            self.log_dict({f"train/{k}": v.float().mean() for k, v in out.metrics.items()}, batch_size=n)
        return {"loss": loss, "per_sample": out.detached()}

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """A per-batch selection (CoLM) replaces a drawn training batch by the subset it trains on, here,
        before ``training_step``: the backward pass, the callbacks and the per-sample store see that subset."""
        if self.batch_selection is None or self._trainer is None or not self.trainer.training:
            return batch
        return self.batch_selection.select(self, batch)

    def _plan_optimizer_batch(self, batch: dict, batch_idx: int) -> None:
        """β-DPO under gradient accumulation: at an optimizer step's first micro-batch, its statistics
        from the margins of all the step's micro-batches (``BetaDPOController.plan``)."""
        k = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        if k == 1 or not hasattr(self.controller, "plan") or batch_idx % k != 0:
            return
        with torch.no_grad():
            margins = []
            for chunk in self.trainer.datamodule.optimizer_batch(batch["ids"]):
                chunk = self.with_reference({key: (v.to(self.device) if torch.is_tensor(v) else v) for key, v in chunk.items()})
                margins.append(self.objective.scores(self.model, chunk).margin)
        self.controller.plan(margins)

    def _logger_writes_this_step(self) -> bool:
        """Step metrics reach the logger every ``log_every_n_steps`` steps only; each ``self.log`` call
        costs one to two milliseconds on CPU, so values go in on those steps alone (every value also
        lands in the per-sample store when dynamics are recorded). The loss is logged on every step
        while a progress bar shows it."""
        if self._trainer is None:
            return True
        connector = getattr(self.trainer, "_logger_connector", None)
        if connector is not None and hasattr(connector, "should_update_logs"):
            return bool(connector.should_update_logs or self.trainer.fast_dev_run)
        return (self.global_step + 1) % max(self.trainer.log_every_n_steps, 1) == 0

    def _shows_progress_bar(self) -> bool:
        return self._trainer is None or self.trainer.progress_bar_callback is not None

    # ---- evaluation: per-sample loss and metrics, plus exact match of greedy generations ----------
    # (eval.generate / eval.max_examples size the generations, eval.kl the KL to the reference)
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.evaluation.generate and self.evaluation.val_generate)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.evaluation.generate)

    def on_test_start(self) -> None:
        self._generations = []
        if self.reference_weights is not None and (self.evaluation.generate or self.evaluation.kl):
            # a plain attribute, not a submodule: the reference never enters a checkpoint or the optimiser
            object.__setattr__(self, "_reference", self.reference_weights.load(self.model))

    def on_test_end(self) -> None:
        object.__setattr__(self, "_reference", None)
        rows, self._generations = self._generations, []
        if self._trainer is not None and self.trainer.world_size > 1:
            from assay.run.distributed import gather_objects

            rows = [r for part in gather_objects(rows) for r in part]
        if self._trainer is None or self.trainer.is_global_zero:
            from assay.heldout import write_generations

            if self.evaluation.generate and self.generations_dir is not None:  # SFT and preference runs alike
                write_generations(rows, self.generations_dir)
            if self.reference_weights is not None:
                self.reference_weights.cleanup()

    def _eval_step(self, batch: dict, split: str, generate: bool) -> None:
        out = self.objective.compute(self.model, self.with_reference(batch), training=False, controller=self.controller)
        values = {"loss": out.loss, **out.metrics}
        if split == "test" and self._reference is not None and self.evaluation.kl:
            from assay.heldout import chosen_kl

            values["_kl_ref_sum"], values["_kl_ref_tokens"] = chosen_kl(self.model, self._reference, batch)
        self._keep(batch["index"].tolist(), batch["sources"], values)
        keep = [i for i, row in enumerate(batch["index"].tolist()) if self.evaluation.max_examples is None or row < self.evaluation.max_examples]
        if not generate or not keep:
            return
        batch = generation_rows(batch, keep)
        values = dict(zip(("exact_match", "answer_reward"), self.greedy_scores(batch)))
        if split == "test":
            values.update(self.record_generations(batch, values["answer_reward"]))
        self._keep(batch["index"].tolist(), batch["sources"], values)

    def _keep(self, rows: list[int], sources: list[str], values: dict) -> None:
        for key, v in values.items():
            for row, source, x in zip(rows, sources, v.float().cpu().tolist()):
                self._eval_sums[key].append((row, source, x))

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def _log_eval(self, split: str) -> None:
        """Means over the whole held-out set. Under DDP each rank evaluated every world-th row; the
        per-sample values of all ranks are gathered and summed in row order, so every rank logs the
        same numbers a one-process evaluation of the same weights gives."""
        sums = dict(self._eval_sums)
        self._eval_sums.clear()
        if self._trainer is not None and self.trainer.world_size > 1:
            from assay.run.distributed import gather_objects

            merged: dict[str, list] = defaultdict(list)
            for part in gather_objects(sums):
                for key, triples in part.items():
                    merged[key].extend(triples)
            # one value per row: padding of the shards repeats a few rows
            sums = {key: sorted({row: (row, source, x) for row, source, x in triples}.values()) for key, triples in merged.items()}
        metrics = {}
        for name, (numerator, denominator) in RATIOS.items():  # token means: Σ numerator / Σ denominator
            if numerator in sums:
                total, count = sums.pop(numerator), sums.pop(denominator)
                metrics[f"{split}/{name}"] = sum(x for _, _, x in total) / max(sum(x for _, _, x in count), 1.0)
        unknown = [n for n in self.evaluation.per_source_metrics if n != "all" and n not in sums]
        if unknown:  # a name that matches no metric would silently leave the per-source table empty
            raise UserError("eval.per_source_metrics", unknown[0], f"is not a metric this run reports per source; it reports {sorted(sums)} (or write all)")
        for key, triples in sums.items():
            metrics[f"{split}/{key}"] = sum(x for _, _, x in triples) / len(triples)
            if key in self.evaluation.per_source_metrics or "all" in self.evaluation.per_source_metrics:
                by_source: dict[str, list[float]] = defaultdict(list)
                for _, source, x in triples:
                    by_source[source].append(x)
                for source, xs in sorted(by_source.items()):
                    metrics[f"{split}/{key}/{source}"] = sum(xs) / len(xs)
        # Already global: a sync_dist mean of W equal values would only add rounding.
        self.log_dict(metrics, sync_dist=False, rank_zero_only=False)

    @torch.no_grad()
    def greedy_scores(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example, of the greedy continuation of the prompt: exact match with the gold answer
        (whitespace-normalised), and its ground-truth reward (1 − symbol edit distance / length,
        assay.data.rewards; the skills tasks' reward, partial credit for a near miss)."""
        texts = self.greedy_texts(self.model, batch)
        self._last_texts = texts
        hits = [normalise_answer(t) == normalise_answer(a) for t, a in zip(texts, batch["answers"])]
        rewards = [skill_reward(a, t) for t, a in zip(texts, batch["answers"])]
        return torch.tensor(hits, dtype=torch.float32), torch.tensor(rewards, dtype=torch.float32)

    @torch.no_grad()
    def record_generations(self, batch: dict, policy_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per generated test prompt: the row of ``test_generations.parquet``; against the reference
        model (assay.heldout), also the win of the policy's greedy answer over the reference's under
        the ground-truth reward (1, ½ on a tie, 0)."""
        from assay.heldout import win_scores

        prompts = self.tokenizer.batch_decode(batch["prompt_input_ids"], skip_special_tokens=True)
        rows = [{"id": row_id, "source": batch["sources"][i], "prompt": prompts[i].strip(), "answer": batch["answers"][i],
                 "policy_generation": self._last_texts[i].strip(), "policy_reward": float(policy_rewards[i]),
                 "exact_match": float(normalise_answer(self._last_texts[i]) == normalise_answer(batch["answers"][i]))}
                for i, row_id in enumerate(batch["ids"])]
        self._generations.extend(rows)
        if self._reference is None:
            return {}
        texts = self.greedy_texts(self._reference, batch)
        ref_rewards = torch.tensor([skill_reward(a, t) for t, a in zip(texts, batch["answers"])], dtype=torch.float32)
        wins = win_scores(policy_rewards.float().cpu(), ref_rewards)
        for row, text, reward, win in zip(rows, texts, ref_rewards.tolist(), wins.tolist()):
            row.update(reference_generation=text.strip(), reference_reward=reward, win=win)
        return {"win_rate": wins}

    def greedy_texts(self, model, batch: dict) -> list[str]:
        """Decoded greedy continuations of the batch's (left-padded) prompts by ``model``."""
        from assay.models.passes import generate_texts

        return generate_texts(model, self.tokenizer, batch["prompt_input_ids"], batch["prompt_attention_mask"], self.evaluation.max_new_tokens)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        drop_frozen(self, checkpoint)  # a LoRA run's checkpoint: the adapter, not the frozen base

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restore_frozen(self, checkpoint)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay, betas=tuple(self.optim.betas))
        total = self.trainer.estimated_stepping_batches
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(self.optim.schedule, self.optim.warmup_steps, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


GENERATION_KEYS = ("prompt_input_ids", "prompt_attention_mask", "answers", "ids", "sources", "index")


def generation_rows(batch: dict, keep: list[int]) -> dict:
    """What greedy generation reads of a batch, for the examples at positions ``keep`` only."""
    index = torch.tensor(keep, dtype=torch.long)
    return {k: batch[k][index.to(batch[k].device)] if torch.is_tensor(batch[k]) else [batch[k][i] for i in keep] for k in GENERATION_KEYS}


def _multiplier(step: int, *, schedule: str, warmup: int, total: int) -> float:
    if schedule == "constant":
        return 1.0  # no warm-up, as transformers' "constant" schedule
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant_with_warmup":
        return 1.0
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))  # cosine: half a period, from 1 to 0


def lr_multiplier(schedule: str, warmup: int, total: int) -> partial:
    """The learning-rate multiplier of step t for ``optim.schedule``: linear warm-up over ``warmup``
    steps, then constant, linear decay or cosine decay to 0 at ``total``. The same values as
    transformers' ``get_scheduler`` for these names, without importing its trainer utilities (and
    peft with them) into every run."""
    return partial(_multiplier, schedule=schedule, warmup=warmup, total=total)
