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

from assay.config import GROUPS, resolved, validate
from assay.errors import UserError, explain
from assay.paths import CONF_DIR

HEADLINE = ("test/exact_match", "test/pref_acc", "test/reward_margin", "test/loss", "val/exact_match")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one composed config (all its stages) and return its summary."""
    if cfg.get("collab"):  # several private clients on Flower (assay.collab)
        from assay.collab.run import run_collab

        return run_collab(cfg)
    if cfg.stages:
        return run_stages(cfg)
    return run_stage(cfg, Path(cfg.paths.output_dir))


def run_stage(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    import pytorch_lightning as pl
    from datasets import DatasetDict
    from pytorch_lightning.callbacks import ModelCheckpoint

    from assay.data import build_examples
    from assay.data.collate import tokenize_split
    from assay.data.datamodule import AssayDataModule, SamplerProgress
    from assay.models.build import save_model
    from assay.module import AssayModule
    from assay.objectives.reference import attach_reference_logps
    from assay.preemption import PreemptionCheckpoint, cluster_plugins
    from assay.selection import SelectionContext
    from assay.selection.rescoring import rescoring_callbacks

    started = time.time()
    spec = validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").unlink(missing_ok=True)  # a run that does not finish has no summary
    OmegaConf.save(OmegaConf.create(job_config(cfg)), run_dir / "config.yaml")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    spec.trainer.apply_threads()  # before data, scoring and training alike

    examples = build_examples(spec.data, spec.mixture, spec.noise)
    model, tokenizer = spec.model.build(examples.splits)
    tokenizer.save_pretrained(run_dir / "tokenizer")
    data = spec.data
    tokenized = DatasetDict(
        {
            split: tokenize_split(ds, tokenizer, data.format, data.separator, data.max_length).add_column("_row", list(range(len(ds))))
            for split, ds in examples.splits.items()
        }
    )
    reference_files: dict[str, str] = {}
    if spec.objective.needs_reference:
        cache = Path(cfg.paths.cache_dir) / "reference_logps"
        tokenized, reference_files = attach_reference_logps(
            model, tokenized, tokenizer.pad_token_id, data.eval_batch_size, cache, spec.objective.collation
        )

    selection = spec.selection.select(
        SelectionContext(tokenized["train"], tokenized, spec.selection.scoring_model(model, tokenizer), tokenizer, run_dir, Path(cfg.paths.cache_dir))
    )
    selection.save(run_dir / "selection.parquet")
    ordering = spec.ordering.for_run(spec.trainer.max_steps * data.batch_size * spec.trainer.accumulate_grad_batches)
    datamodule = AssayDataModule(
        tokenized, selection.kept_rows, ordering.keys(tokenized["train"], selection.scores), ordering, data.format, data.batch_size,
        data.eval_batch_size, tokenizer.pad_token_id, allow_order_change=cfg.allow_order_change, collation=spec.objective.collation,
    )
    module = AssayModule(model, tokenizer, spec.objective, spec.optim, spec.eval)
    every = cfg.get("checkpoint_every_n_steps") or max(1, spec.trainer.max_steps // 4)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="step={step:06d}", auto_insert_metric_name=False, save_last=True,
        save_top_k=-1 if cfg.get("keep_checkpoints") else 0, every_n_train_steps=every,
    )
    # The preemption callback comes after the sampler and the dynamics recorders, so a checkpoint it
    # writes on a requeue signal already counts the batch that just ended.
    rescoring = rescoring_callbacks(spec.selection, ordering, tokenized, tokenizer, run_dir, Path(cfg.paths.cache_dir))
    callbacks = [SamplerProgress(), *spec.dynamics.callbacks(run_dir), *rescoring, PreemptionCheckpoint(run_dir / "checkpoints" / "last.ckpt"), checkpoints]
    logger = spec.logger.build(run_dir, _logger_context(cfg, run_dir))
    trainer = spec.trainer.build(callbacks=callbacks, logger=logger, default_root_dir=str(run_dir), plugins=cluster_plugins())
    resume = _resume_path(cfg, run_dir)
    if resume:
        print(f"[assay] resuming from {resume}", flush=True)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    save_model(module.model, tokenizer, run_dir)

    summary = {
        "status": "completed",
        "run_dir": str(run_dir),
        "stage": cfg.stage,
        "metrics": {**val, **{k: float(v) for k, v in test.items()}, **selection.detection_metrics()},
        "data": {
            "source_counts": examples.source_counts,
            "train_examples": len(tokenized["train"]),
            "kept_examples": int(selection.kept.sum()),
            "val_examples": len(tokenized["val"]),
            "test_examples": len(tokenized["test"]),
            "data_order_fingerprint": datamodule.sampler.fingerprint(),
        },
        "choices": _choices(cfg),
        "selection": selection.metadata,
        "reselections": [entry for callback in rescoring for entry in callback.history],
        "reference_logps": reference_files,
        "global_step": trainer.global_step,
        "resumed_from": resume,
        "elapsed_s": round(time.time() - started, 1),
    }
    if logger:
        logger.log_hyperparams({"summary/" + k: v for k, v in summary["metrics"].items()})
        logger.finalize("success")
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "summary"):
            logger.experiment.summary.update({**summary["metrics"], "status": "completed"})
    _write_json(run_dir / "summary.json", summary)
    _finish_wandb(0)
    return summary


def run_stages(cfg: DictConfig) -> dict[str, Any]:
    """A multi-stage recipe: each stage is the job's config plus the stage's overrides. Every stage
    after the first gets ``previous_stage=<previous stage dir>`` (its overrides may interpolate
    ``${previous_stage}``) and starts from that stage's final model (``model.init_from``) unless it
    sets ``init_from_previous: false`` (e.g. LESS: train the base model on what a warm-up selected)."""
    from hydra import compose

    root = Path(cfg.paths.output_dir)
    base = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    previous, stages = None, {}
    for stage in _stage_entries(cfg):
        # The recipe's stage overrides first, the command line after them: the command line has the last word.
        overrides = list(stage["overrides"]) + base + [f"stage={stage['name']}", "stages=[]"]
        if previous is not None:
            overrides.append(f"previous_stage={previous}")
            if stage["init_from_previous"]:
                overrides.append(f"model.init_from={previous}")
        stage_cfg = compose(config_name="train", overrides=overrides)
        stage_dir = root / stage["name"]
        with open_dict(stage_cfg):
            stage_cfg.paths.output_dir = str(stage_dir)
        print(f"[assay] stage {stage['name']}: {stage_dir}", flush=True)
        stages[stage["name"]] = run_stage(stage_cfg, stage_dir)
        previous = str(stage_dir)
    last = stages[list(stages)[-1]]
    summary = {"status": "completed", "run_dir": str(root), "metrics": last["metrics"], "stages": stages}
    _write_json(root / "summary.json", summary)
    return summary


STAGE_KEYS = ("name", "overrides", "init_from_previous")


def _stage_entries(cfg: DictConfig) -> list[dict[str, Any]]:
    """The recipe's stages with their overrides unresolved (``${previous_stage}`` is filled in per
    stage by Hydra, not here), each checked for unknown keys before any stage runs."""
    entries = []
    for i, stage in enumerate(OmegaConf.to_container(cfg.stages, resolve=False)):
        if not isinstance(stage, dict) or "name" not in stage:
            raise UserError(f"stages[{i}]", stage, "must be a mapping with a name and overrides")
        unknown = sorted(set(stage) - set(STAGE_KEYS))
        if unknown:
            raise UserError(f"stages[{i}].{unknown[0]}", stage[unknown[0]], f"is not a stage field; allowed: {list(STAGE_KEYS)}")
        init = stage.get("init_from_previous", True)
        if not isinstance(init, bool):
            raise UserError(f"stages[{i}].init_from_previous", init, "must be true or false")
        entries.append({"name": str(stage["name"]), "overrides": [str(o) for o in stage.get("overrides") or []], "init_from_previous": init})
    return entries


def job_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config of the job itself, without Hydra's own node."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
    return resolved(job)


def _resume_path(cfg: DictConfig, run_dir: Path) -> str | None:
    from assay.preemption import requeued

    ckpt = cfg.ckpt_path
    if ckpt in (None, "") and requeued():
        ckpt = "last"  # a requeued SLURM job continues where it stopped, in the same run directory
    if ckpt in (None, ""):
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if ckpt == "last" and not path.is_file():
        return None  # nothing to resume yet: start fresh
    if not path.is_file():
        raise UserError("ckpt_path", ckpt, "checkpoint file does not exist")
    return str(path)


def _choices(cfg: DictConfig) -> dict[str, Any]:
    """Which option of each group this job ran (read from the config itself, so stages report their own)."""
    choices: dict[str, Any] = {}
    if HydraConfig.initialized():
        choices = {g: c for g, c in HydraConfig.get().runtime.choices.items() if g in ("experiment", "debug", "paths")}
    return {**choices, **{g: cfg[g].name for g in GROUPS}}


def _logger_context(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    group, run_name = None, run_dir.name
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode is not None and hc.mode.name == "MULTIRUN":
            group = Path(hc.sweep.dir).name
            run_name = f"{group}/{hc.job.num}"
    # Flat dotted keys (objective.name, noise.p): what wandb's run table and API filters group on.
    from assay.compare import flatten

    return {"group": group or run_name, "run_name": run_name, "stage": cfg.stage, "choices": _choices(cfg), "config": flatten(job_config(cfg))}


def _finish_wandb(exit_code: int) -> None:
    """Close the wandb run of this job, so the next job of an in-process sweep starts its own run
    instead of logging into this one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.rename(path)


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="assay run", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    metrics = summary["metrics"]
    for key in [k for k in HEADLINE if k in metrics] or sorted(metrics)[:8]:
        table.add_row(key, f"{metrics[key]:.4f}")
    console = Console(stderr=False)
    console.print(table)
    console.print(f"run directory: [bold]{summary['run_dir']}[/bold]")


# --------------------------------------------------------------------------------------------------
# Entry point


def _task(cfg: DictConfig) -> float | None:
    try:
        summary = run(cfg)
    except UserError as e:
        _finish_wandb(2)
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except BaseException:
        _finish_wandb(1)
        raise
    print_summary(summary)
    return summary["metrics"].get("test/exact_match")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Lightning's own use of a deprecated torch pytree name, printed at every fit: not the user's concern.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    from assay.preflight import preflight

    try:
        preflight(sys.argv[1:])
    except Exception as e:  # composition errors are the user's: one line, no traceback
        print(f"error: {explain(e)}", file=sys.stderr, flush=True)
        sys.exit(2)
    hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")(_task)()


if __name__ == "__main__":
    main()
