"""Command lines -> every job's overrides: Hydra's flags told apart from overrides, a multirun's grid
(the basic sweeper's cartesian product, a ``sweep=<name>`` overlay's ``hydra.sweeper.params``), and
for a search sweeper (Optuna) the extreme values of each searched key.

Read by the preflight (which validates every job), by resuming (which replays a run's overrides) and
by ``assay-compare`` (which lists the jobs a sweep should have). Nothing here validates a config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

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


def sweeper_params_overrides(params: Any) -> list[str]:
    """``hydra.sweeper.params`` as overrides, the way the basic sweeper reads them (a command-line
    override of the same key comes later and wins)."""
    return [f"{k}={v}" for k, v in (params or {}).items()]


def search_space_jobs(base: list[str], params: Any) -> list[list[str]]:
    """For a search sweeper (Optuna): the base job, and for every searched key its extreme values
    (each choice; both ends of an interval or range), so a key or value that cannot compose fails now."""
    jobs = [base]
    for k, v in (params or {}).items():
        (override,) = OverridesParser.create().parse_overrides([f"{k}={v}"])
        key = override.get_key_element()
        if not override.is_sweep_override():
            jobs.append(base + [override.input_line])
            continue
        sweep = override.value()
        if hasattr(sweep, "list") or hasattr(sweep, "step"):
            values = list(override.sweep_string_iterator())
            values = values if hasattr(sweep, "list") else values[:1] + values[-1:]
        else:  # interval(a, b)
            start, end = sweep.start, sweep.end
            if "int" in (getattr(sweep, "tags", None) or set()) or override.input_line.split("=", 1)[1].startswith("int("):
                start, end = int(start), int(end)
            values = [str(start), str(end)]
        jobs += [base + [f"{key}={value}"] for value in values]
    return jobs


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Every job of a multirun, including the grid a ``sweep=<name>`` overlay (or any config) puts
    in ``hydra.sweeper.params``."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose(config_name="train", overrides=base, return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    params = OmegaConf.to_container(sweeper.params, resolve=False) if sweeper.get("params") else {}
    storage = str(sweeper.get("storage") or "")
    if storage.startswith("sqlite:///"):
        # SQLite creates the study file but not its folder; the study must outlive one sweep directory.
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if "BasicSweeper" in str(sweeper.get("_target_", "")):
        return expand(sweeper_params_overrides(params) + overrides, True)
    params.update({o.get_key_element(): o.input_line.split("=", 1)[1] for o in parsed if o.is_sweep_override()})
    return search_space_jobs(base, params)


def printed_config_overrides(argv: list[str]) -> list[str] | None:
    """The overrides of ``--cfg job|hydra|all`` (or ``--resolve``), which prints the composed config
    instead of running; None for any other command line."""
    if not any(a in ("--cfg", "-c", "--resolve") for a in argv):
        return None
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--cfg", "-c") or arg in HYDRA_FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            rest.append(arg)
    return rest
