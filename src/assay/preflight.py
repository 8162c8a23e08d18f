"""Compose and validate every job of a command before any job starts.

A typo, a wrong type or an out-of-range value fails in under a second with one line, instead of
after a model has loaded; in a sweep, one bad combination stops the sweep before any job runs.
"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

from assay.config import validate
from assay.errors import UserError
from assay.paths import CONF_DIR

HYDRA_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun", "--info", "-i", "--package", "-p"}
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--resolve"}


def job_overrides(argv: list[str]) -> tuple[list[str], bool] | None:
    """(overrides, multirun) from a command line, or None when it only prints information."""
    overrides, multirun, skip = [], False, False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in INFO_FLAGS:
            return None
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in HYDRA_FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, multirun


def expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Every job's override list (the basic sweeper's cartesian product for multiruns)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    if not multirun:
        return [overrides]
    if any(o.key_or_group.startswith("hydra/sweeper") for o in parsed):
        return [[o.input_line for o in parsed if not o.is_sweep_override()]]  # e.g. optuna picks values itself
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def preflight(argv: list[str]) -> int:
    """Validate every job; returns the number of jobs checked."""
    parsed = job_overrides(argv)
    if parsed is None:
        return 0
    jobs = expand(*parsed)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for job in jobs:
            try:
                cfg = compose(config_name="train", overrides=job, return_hydra_config=True)
                HydraConfig.instance().set_config(cfg)
                validate(cfg)
            except UserError as e:
                if len(jobs) > 1:
                    raise UserError(e.field, e.value, f"{e.allowed} (in the job with overrides {' '.join(job)})") from None
                raise
    GlobalHydra.instance().clear()
    return len(jobs)
