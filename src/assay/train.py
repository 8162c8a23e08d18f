"""``assay-train``: compose -> validate -> examples -> model -> select -> order -> train -> evaluate.

    assay-train                                             # the embedded default (SFT on skills)
    assay-train objective=dpo data.format=preference noise=pairwise_flip noise.p=0.2
    assay-train experiment=sft_then_dpo                     # two stages in one command
    assay-train -m objective=sft,dpo seed=0,1,2 ...         # a sweep (every job validated first)
    assay-train --cfg job                                   # show the composed config
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from assay import provenance
from assay.config import validate
from assay.errors import UserError, environment_problem, explain
from assay.paths import CONF_DIR
from assay.run import distributed, log as runlog
from assay.run.dirs import claimed, enter_phase, job_choices, job_config, write_json
from assay.run.resume import check_checkpoint_fits, checkpoint_to_resume, resume_argv
from assay.run.results import HEADLINE, flatten


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one composed config (all its stages) in the run directory it claims, and return its summary."""
    from assay.run.preemption import requeued

    run_dir = Path(cfg.paths.output_dir)
    ckpt = cfg.get("ckpt_path")
    resuming = ckpt not in (None, "") or requeued()
    # ckpt_path=last where no checkpoint (or collaborative round state) was written yet: a start from step 0
    resumable = (run_dir / "server" / "state.json") if cfg.get("collab") else (run_dir / "checkpoints" / "last.ckpt")
    fresh_start = resuming and ckpt in (None, "", "last") and not cfg.stages and not resumable.exists()
    with claimed(run_dir, "hydra.run.dir", str(run_dir), resuming, fresh_start):
        if cfg.get("collab"):  # several private clients on Flower (assay.collab)
            from assay.collab.run import run_collab

            return run_collab(cfg)
        if cfg.stages:
            return run_stages(cfg)
        return run_stage(cfg, run_dir)


def run_stage(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    import pytorch_lightning as pl
    from datasets import DatasetDict
    from pytorch_lightning.callbacks import ModelCheckpoint

    from assay.data import build_examples_and_model
    from assay.data.collate import tokenize_split
    from assay.data.datamodule import AssayDataModule, SamplerProgress
    from assay.dynamics.mechanism import write_mechanism
    from assay.heldout import ReferenceWeights, write_heldout_ids
    from assay.mixing.run import setup_mixing
    from assay.models.build import save_model
    from assay.loggers import wandb_location
    from assay.trainers import gathered_weights
    from assay.module import AssayModule
    from assay.objectives.live_reference import ReferenceSync
    from assay.objectives.reference import attach_reference_logps
    from assay.run.preemption import DivergenceGuard, PreemptionCheckpoint, cluster_plugins
    from assay.run.progress import set_enabled
    from assay.run.progress_bars import lightning_progress
    from assay.run.machine import check_trainer
    from assay.run.speed import Throughput
    from assay.samples import SamplePrompts
    from assay.selection import SelectionContext
    from assay.selection.rescoring import rescoring_callbacks

    started = time.time()
    spec = validate(cfg)
    check_trainer(spec)  # the machine this job landed on (a SLURM node, a stage of a recipe), before any work
    distributed.start(spec.trainer)  # several processes: all ranks join before any work; rank 0 writes
    main = distributed.is_main()
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        runlog.start_run_log(run_dir)
        (run_dir / "summary.json").unlink(missing_ok=True)  # a run that does not finish has no summary
        OmegaConf.save(OmegaConf.create(job_config(cfg)), run_dir / "config.yaml")
    else:
        runlog.quiet_console()
    origin = provenance.collect(run_dir if main else None, world_size=distributed.planned_processes(spec.trainer))
    if main:  # at the start too: a run killed before its summary still names the code it ran
        write_json(run_dir / provenance.RECORD_FILE, origin)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    spec.trainer.apply_threads()  # before data, scoring and training alike
    set_enabled(spec.trainer.enable_progress_bar)  # the phases before training (reference log-probs, scoring) too

    examples, model, tokenizer = build_examples_and_model(spec, pairs=lambda train, m, tok: distributed.rank_zero_first(lambda: _on_policy(spec, cfg, train, m, tok)))
    if main:
        tokenizer.save_pretrained(run_dir / "tokenizer")
        write_heldout_ids(examples.splits, run_dir)
        if getattr(spec.data, "pairs", "rated") == "on_policy":
            _write_train_pairs(examples.splits["train"], run_dir)
    data = spec.data
    tokenized = DatasetDict(
        {
            split: tokenize_split(ds, tokenizer, data.format, data.separator, data.max_length, data.chat_template,
                                  kl_batch_size=data.batch_size).add_column("_row", list(range(len(ds))))
            for split, ds in examples.splits.items()
        }
    )
    reference_files: dict[str, str] = {}
    with distributed.on_device(model, distributed.compute_device(spec.trainer)):  # on the GPU when training uses one
        if spec.objective.needs_reference and not getattr(spec.objective, "live_reference", False):  # TR-DPO: computed per batch
            cache = Path(cfg.paths.cache_dir) / "reference_logps"
            # RHO-1 may score with a reference of its own (objective.reference_from); every other objective with the start
            scorer = spec.objective.reference_model(model, tokenizer) if hasattr(spec.objective, "reference_model") else model
            with distributed.on_device(scorer, distributed.compute_device(spec.trainer)):
                tokenized, reference_files = distributed.rank_zero_first(lambda: attach_reference_logps(  # the others read rank 0's cache
                    scorer, tokenized, tokenizer.pad_token_id, data.eval_batch_size, cache, spec.objective.collation,
                    heads=getattr(spec.objective, "reference_heads", False),
                ))
            del scorer

        enter_phase("selecting the training data")
        selection = distributed.once(lambda: _select(spec, SelectionContext(
            tokenized["train"], tokenized, spec.selection.scoring_model(model, tokenizer), tokenizer, run_dir, Path(cfg.paths.cache_dir)
        ), run_dir))
    drawn = spec.batch_selection.drawn(data.batch_size)  # a per-batch selection (CoLM) draws r·b and trains b
    if spec.trainer.max_steps is None:  # trainer.max_epochs alone: the steps follow from the selected rows
        spec.trainer = spec.trainer.for_rows(len(selection.kept_rows), drawn, distributed.planned_processes(spec.trainer))
        runlog.info("%d epochs over %d training rows: %d optimizer steps", spec.trainer.max_epochs, len(selection.kept_rows), spec.trainer.max_steps)
    ordering = spec.ordering.for_run(spec.trainer.max_steps * drawn * spec.trainer.accumulate_grad_batches)
    datamodule = AssayDataModule(
        tokenized, selection.kept_rows, ordering.keys(tokenized["train"], selection.scores), ordering, data.format, drawn,
        data.eval_batch_size, tokenizer.pad_token_id, allow_order_change=cfg.allow_order_change, collation=spec.objective.collation,
    )
    if getattr(spec.objective.controller, "per_optimizer_batch", False):
        if spec.trainer.accumulate_grad_batches > 1:
            datamodule.step_batches = spec.trainer.accumulate_grad_batches  # β-DPO: statistics over the optimizer batch
        pairs = data.batch_size * spec.trainer.accumulate_grad_batches * distributed.planned_processes(spec.trainer)
        if pairs < 64:
            runlog.info("β-DPO's batch statistics cover the optimizer batch, %d pairs here; the paper's is 64 "
                           "(raise data.batch_size or trainer.accumulate_grad_batches)", pairs)
    mixing = setup_mixing(spec, examples, tokenized, datamodule, run_dir, Path(cfg.paths.cache_dir), tokenizer)
    # the weights the policy starts from (= the reference of reference-based objectives), for the test's
    # win rate and KL against them (assay.heldout)
    reference = ReferenceWeights(spec.model, model, run_dir, write=main) if spec.objective.needs_reference else None
    module = AssayModule(model, tokenizer, spec.objective, spec.optim, spec.eval, reference=reference)
    module.reweighting = mixing.reweighting  # DoReMi's proxy: the α-reweighted loss (its α in every checkpoint)
    module.batch_selection = spec.batch_selection.build(model, data.batch_size, cfg.seed)
    module.generations_dir = run_dir  # test_generations.parquet
    every = cfg.get("checkpoint_every_n_steps") or max(1, spec.trainer.max_steps // 4)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="step={step:06d}", auto_insert_metric_name=False, save_last=True,
        save_top_k=-1 if cfg.get("keep_checkpoints") else 0, every_n_train_steps=every,
    )
    # The preemption callback comes after the sampler and the dynamics recorders, so a checkpoint it
    # writes on a requeue signal already counts the batch that just ended.
    rescoring = rescoring_callbacks(spec.selection, ordering, tokenized, tokenizer, run_dir, Path(cfg.paths.cache_dir))
    # TR-DPO's reference sync comes before every checkpointing callback: a checkpoint at step s holds
    # the reference synced at s.
    sync = [ReferenceSync()] if getattr(spec.objective, "live_reference", False) else []
    samples = [SamplePrompts(spec.eval.sample_prompts, tokenizer, data, "prompt_messages" in examples.splits["train"].column_names,
                             spec.eval.max_new_tokens, run_dir)] if spec.eval.sample_prompts else []
    speed = Throughput(spec.trainer.peak_flops, Path(cfg.paths.cache_dir)) if spec.trainer.throughput else None
    callbacks = [*sync, SamplerProgress(), DivergenceGuard(spec.trainer.log_every_n_steps, spec.optim.lr), *mixing.callbacks, *spec.dynamics.callbacks(run_dir), *rescoring,
                 *([module.batch_selection] if module.batch_selection else []), PreemptionCheckpoint(run_dir / "checkpoints" / "last.ckpt"), checkpoints,
                 *samples, *([speed] if speed else []), *lightning_progress(spec.trainer.enable_progress_bar)]
    resume = checkpoint_to_resume(cfg.ckpt_path, run_dir)
    if resume:  # before Lightning's strict restore, which lists every parameter of another shape
        check_checkpoint_fits(Path(resume), module, "ckpt_path", cfg.ckpt_path or "last")
    logger = spec.logger.build(run_dir, {**_logger_context(cfg, run_dir, origin), "resume_from": resume})
    trainer = spec.trainer.build(model, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir), plugins=cluster_plugins())
    if resume:
        runlog.info("resuming from %s", resume)
    enter_phase("training")
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    enter_phase("testing")
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    weights = gathered_weights(trainer, module.model)  # every rank takes part when parameters are sharded
    if main:
        enter_phase("saving the model")
        save_model(module.model, tokenizer, run_dir, spec.model, state_dict=weights)

    summary = {
        "status": "completed",
        "run_dir": str(run_dir),
        "stage": cfg.stage,
        "metrics": {**val, **{k: float(v) for k, v in test.items()}, **selection.detection_metrics(), **(write_mechanism(run_dir) if main else {}),
                    **(speed.summary() if speed else {})},
        "data": {
            "source_counts": examples.source_counts,
            "train_examples": len(tokenized["train"]),
            "kept_examples": int(selection.kept.sum()),
            "val_examples": len(tokenized["val"]),
            "test_examples": len(tokenized["test"]),
            "data_order_fingerprint": datamodule.sampler.fingerprint(),
        },
        "mixture": mixing.summary(),
        "choices": job_choices(cfg),
        "selection": selection.metadata,
        "reselections": [entry for callback in rescoring for entry in callback.history],
        "reference_logps": reference_files,
        "global_step": trainer.global_step,
        "resumed_from": resume,
        "elapsed_s": round(time.time() - started, 1),
        "provenance": {**origin, "data_order_fingerprint": datamodule.sampler.fingerprint()},
    }
    if logger and main:
        logger.log_hyperparams({"summary/" + k: v for k, v in summary["metrics"].items()})
        logger.finalize("success")
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "summary"):
            logger.experiment.summary.update({**summary["metrics"], "status": "completed"})
        summary.update(wandb_location(logger))
    if main:
        write_json(run_dir / "summary.json", summary)
        runlog.to_file("finished: %s", json.dumps(summary["metrics"], sort_keys=True))
    _finish_wandb(0)
    return summary


def _on_policy(spec, cfg: DictConfig, train, model, tokenizer):
    """``data.pairs=on_policy``: the training pairs sampled from the starting model (assay.models.onpolicy),
    on the GPU when training uses one; rank 0 samples, the other ranks read its cache."""
    from assay.models.onpolicy import on_policy_pairs

    enter_phase("sampling on-policy pairs")
    with distributed.on_device(model, distributed.compute_device(spec.trainer)):
        return on_policy_pairs(train, model, tokenizer, spec.data, spec.eval.max_new_tokens, Path(cfg.paths.cache_dir))


def _write_train_pairs(train, run_dir: Path) -> None:
    """``train_pairs.parquet``: the on-policy training pairs as trained (after noise: ``is_flipped``), with
    their ground-truth rewards, gap, kind and draws, to join with the per-sample store by id."""
    from assay.models.onpolicy import PAIR_COLUMNS

    wanted = ["id", "source", "prompt", "answer", "chosen", "rejected", *PAIR_COLUMNS, "is_flipped"]
    train.select_columns([c for c in wanted if c in train.column_names]).to_parquet(str(run_dir / "train_pairs.parquet"))


def _select(spec, context, run_dir: Path):
    selection = spec.selection.select(context)
    selection.save(run_dir / "selection.parquet")
    return selection


def run_stages(cfg: DictConfig) -> dict[str, Any]:
    """A multi-stage recipe: each stage is the job's config plus the stage's overrides. Every stage
    after the first gets ``previous_stage=<previous stage dir>`` (its overrides may interpolate
    ``${previous_stage}``) and starts from that stage's final model (``model.init_from``) unless it
    sets ``init_from_previous: false`` (e.g. LESS: train the base model on what a warm-up selected)."""
    from hydra import compose

    from assay.run.stages import stage_entries, stage_overrides

    root = Path(cfg.paths.output_dir)
    base = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    previous, stages = None, {}
    for stage in stage_entries(cfg):
        stage_cfg = compose(config_name="train", overrides=stage_overrides(stage, base, previous))
        stage_dir = root / stage["name"]
        with open_dict(stage_cfg):
            stage_cfg.paths.output_dir = str(stage_dir)
        runlog.info("stage %s: %s", stage["name"], stage_dir)
        stages[stage["name"]] = run_stage(stage_cfg, stage_dir)
        previous = str(stage_dir)
    last = stages[list(stages)[-1]]
    summary = {"status": "completed", "run_dir": str(root), "metrics": last["metrics"], "stages": stages,
               "provenance": provenance.collect(root if distributed.is_main() else None, world_size=distributed.world_size())}
    if distributed.is_main():
        write_json(root / "summary.json", summary)
    return summary


def _logger_context(cfg: DictConfig, run_dir: Path, origin: dict[str, Any]) -> dict[str, Any]:
    group, run_name = None, run_dir.name
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode is not None and hc.mode.name == "MULTIRUN":
            group = Path(hc.sweep.dir).name
            run_name = f"{group}/{hc.job.num}"
    # Flat dotted keys (objective.name, noise.p): what wandb's run table and API filters group on.
    return {"group": group or run_name, "run_name": run_name, "stage": cfg.stage, "choices": job_choices(cfg), "config": {**flatten(job_config(cfg)), **flatten({"provenance": origin})}}


def _finish_wandb(exit_code: int) -> None:
    """Close the wandb run of this job, so the next job of an in-process sweep starts its own run
    instead of logging into this one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="assay run", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    metrics = summary["metrics"]
    detection = sorted(k for k in metrics if k.startswith("selection/") and k.endswith("/auroc"))  # when the data has noise flags
    speed = [k for k in ("speed/tokens_per_s", "speed/samples_per_s", "speed/mfu") if k in metrics]  # assay.run.speed
    for key in dict.fromkeys(([k for k in HEADLINE if k in metrics] + detection or sorted(metrics)[:8]) + speed):
        table.add_row(key, f"{metrics[key]:.4f}" if isinstance(metrics[key], (int, float)) else str(metrics[key]))
    console = Console(stderr=False)
    console.print(table)
    console.print(f"run directory: [bold]{summary['run_dir']}[/bold]", soft_wrap=True)  # one line, however long the path
    for stage in [summary, *summary.get("stages", {}).values()]:
        if "wandb" in stage:
            w = stage["wandb"]
            # a resumed run's attempts are directories of one wandb run id: upload them all
            attempts = sorted(Path(w["dir"]).parent.glob(f"offline-run-*-{w.get('id', '')}")) if w["offline"] else []
            target = str(Path(w["dir"]).parent / f"offline-run-*-{w['id']}") if len(attempts) > 1 else w["dir"]
            how = f"offline; upload it with [bold]wandb sync {target}[/bold]" if w["offline"] else "synced"
            console.print(f"wandb run: {w['dir']} ({how})", soft_wrap=True)


# --------------------------------------------------------------------------------------------------
# Entry point


def _task(cfg: DictConfig) -> float | None:
    try:
        summary = run(cfg)
    except UserError as e:
        _finish_wandb(2)
        distributed.finish(ok=False)
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except BaseException as e:
        problem = environment_problem(e)  # disk full: one line, not a traceback
        _finish_wandb(2 if problem else 1)
        distributed.finish(ok=False)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr, flush=True)
        sys.exit(2)
    main = distributed.is_main()
    if distributed.finish(ok=True):  # a rank this process started, or the final barrier, failed
        sys.exit(1)
    if main:
        print_summary(summary)
    return summary["metrics"].get("test/exact_match")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Lightning's own use of a deprecated torch pytree name, printed at every fit: not the user's concern.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    from assay.hub import offline_when_unreachable
    from assay.run.preflight import preflight
    from assay.run.stages import stage_prefixed_args

    offline_when_unreachable()  # before huggingface_hub loads: no minute of retries on a machine without a network
    try:
        sys.argv[1:] = resume_argv(sys.argv[1:])  # resume=<run dir>: that run's overrides, in place
        sys.argv[1:] = stage_prefixed_args(sys.argv[1:])  # <stage>:<override> -> stage_args.<stage>=[...]
        preflight(sys.argv[1:])
    except Exception as e:  # composition errors are the user's: one line, no traceback
        print(f"error: {explain(e)}", file=sys.stderr, flush=True)
        sys.exit(2)
    hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")(_task)()


if __name__ == "__main__":
    main()
