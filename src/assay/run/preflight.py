"""Compose and validate every job of a command before any job starts.

A typo, a wrong type or an out-of-range value fails in under a second with one line, instead of
after a model has loaded; in a sweep, one bad combination stops the sweep before any job runs.
Each job is composed (``assay.run.sweeps`` lists the jobs), validated (``assay.config.validate``),
and checked against what it will read and run on: its data files (``assay.run.datachecks``), the
SLURM partition a sweep is submitted to (``assay.run.cluster``), and the machine (``assay.run.machine``).
"""

from __future__ import annotations

from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from assay.config import validate
from assay.errors import UserError, check_output_dir
from assay.paths import CONF_DIR
from assay.run.cluster import check_slurm_launcher
from assay.run.datachecks import check_data_files
from assay.run.machine import check_trainer, launcher_machine
from assay.run.stages import check_stages
from assay.run.sweeps import job_overrides, printed_config_overrides, sweep_jobs


def preflight(argv: list[str]) -> int:
    """Validate every job; returns the number of jobs checked. ``--cfg job`` validates the config it
    prints (the values, not the data files or the machine)."""
    parsed = job_overrides(argv)
    printed = printed_config_overrides(argv)
    if parsed is None and printed is not None and not any(a in ("-m", "--multirun") for a in argv):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=printed, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            validate(cfg)
        GlobalHydra.instance().clear()
        return 1
    if parsed is None:
        return 0
    overrides, multirun = parsed
    from assay.data.multisource import check_duplicate_domains

    check_duplicate_domains(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        jobs = sweep_jobs(overrides) if multirun else [overrides]
        launcher = None
        if multirun:
            first = compose(config_name="train", overrides=jobs[0], return_hydra_config=True).hydra
            launcher = first.launcher
            check_slurm_launcher(launcher, str(first.runtime.choices.get("hydra/launcher") or "slurm"))
        machine = None  # read once a job validates: counting GPUs imports torch, which a config error must not wait for
        for job in jobs:
            try:
                cfg = compose(config_name="train", overrides=job, return_hydra_config=True)
                HydraConfig.instance().set_config(cfg)
                spec = _check_job(cfg)
                if cfg.stages or cfg.stage_args:  # a multi-stage recipe: every stage's job, files included, before the first one runs
                    check_stages(cfg, job, _compose_job, _check_job)
                    HydraConfig.instance().set_config(cfg)
                machine = machine or launcher_machine(launcher)
                check_trainer(spec, machine)
                check_output_dir(*_output_dir(cfg, multirun))
            except UserError as e:
                if len(jobs) > 1:
                    raise UserError(e.field, e.value, f"{e.allowed} (in the job with overrides {' '.join(job)})") from None
                raise
    GlobalHydra.instance().clear()
    return len(jobs)


def _check_job(cfg: Any) -> Any:
    """One job's config validated and its data files read (the rows of each distinct file, once:
    ``assay.data.tables``); returns its typed spec."""
    spec = validate(cfg)
    check_data_files(spec)
    spec.data.check_files()
    return spec


def _compose_job(overrides: list[str]) -> Any:
    """A stage's job as the run will compose it."""
    cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _output_dir(cfg: Any, multirun: bool) -> tuple[Any, str]:
    """The directory to probe for the run (or sweep) and its field. The default directories end in
    the ``assay.unique`` resolver, which claims a directory when it is resolved, so for those the
    log root is probed instead, and the claim is left to the job itself."""
    field = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    node = cfg.hydra.sweep if multirun else cfg.hydra.run
    raw = str(node._get_node("dir")._value())
    if "assay.unique" in raw:
        return cfg.paths.log_dir, "paths.log_dir"
    return node.dir, field
