"""Run directories: one per run, never shared; resuming a run in place.

Unique directories are claimed by ``assay.paths``'s ``assay.unique`` resolver. Hydra caches the
resolved value in the config (and copies that cache into every job of a sweep, also into the pickles
a SLURM job and its requeues start from), so a run claims exactly one directory.

Resuming. ``assay-train resume=<run dir>`` replays that run's own command-line overrides
(``.hydra/overrides.yaml``) into the same directory with ``ckpt_path=last``. Before Hydra writes
anything, the composed config is compared with the one the run saved (``.hydra/config.yaml``); a
run whose config would differ is refused with the differing keys named, and the directory is left
exactly as it was.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from assay.errors import UserError
from assay.registry import GROUPS

# Keys that may differ between a run and its resumption: where files go and how to resume.
RESUME_IGNORED = re.compile(r"^(ckpt_path|allow_order_change)$|^paths\.")


# --------------------------------------------------------------------------------------------------
# What a run writes


def job_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config of the job itself, without Hydra's own node."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)
    return OmegaConf.to_container(job, resolve=True)  # type: ignore[return-value]


def job_choices(cfg: DictConfig) -> dict[str, Any]:
    """Which option of each group this job ran (read from the config itself, so stages report their own)."""
    from hydra.core.hydra_config import HydraConfig

    choices: dict[str, Any] = {}
    if HydraConfig.initialized():
        choices = {g: c for g, c in HydraConfig.get().runtime.choices.items() if g in ("experiment", "debug", "paths")}
    # A group that derives a method label (objective.method: dpo+dr_dpo) records it, so both spellings
    # of one method (objective=dr_dpo, objective=dpo objective/aggregator=dr_dpo) carry one label.
    return {**choices, **{g: cfg[g].get("method", cfg[g].name) for g in GROUPS}}


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` whole or not at all (a reader never sees half a summary)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.rename(path)


# --------------------------------------------------------------------------------------------------
# Resuming


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~") if "=" in arg else ""


def _value(arg: str) -> str:
    value = arg.split("=", 1)[1]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value


def _quote(path: str) -> str:
    """A path as a Hydra override value (quoted when it holds characters the grammar treats specially)."""
    if re.fullmatch(r"[A-Za-z0-9_./:+@%-]+", path):
        return path
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values, the overrides)."""
    from assay.preflight import HYDRA_FLAGS_WITH_VALUE

    flags, overrides, takes_value = [], [], False
    for arg in argv:
        if takes_value or arg.startswith("-"):
            flags.append(arg)
            takes_value = not takes_value and arg in HYDRA_FLAGS_WITH_VALUE | {"--cfg", "-c"}
        else:
            overrides.append(arg)
    return flags, overrides


def resume_argv(argv: list[str]) -> list[str]:
    """The command line with ``resume=<run dir>`` replaced by that run's overrides, its directory and
    ``ckpt_path=last``; a ``ckpt_path=last`` (given or implied) is checked against the run directory's
    saved config. Raises :class:`UserError` before anything is written."""
    resumes = [a for a in argv if _key(a) == "resume"]
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if resumes:
        if len(resumes) > 1:
            raise UserError("resume", [_value(a) for a in resumes], "give one run directory")
        value = _value(resumes[0])
        if multirun:
            raise UserError("resume", value, "resumes one run; it does not combine with -m (resume each job directory of a sweep on its own)")
        if any(_key(a) == "ckpt_path" for a in argv):
            raise UserError("ckpt_path", next(_value(a) for a in argv if _key(a) == "ckpt_path"), "resume=<run dir> continues from that run's checkpoints/last.ckpt; drop ckpt_path")
        if any(_key(a) == "hydra.run.dir" for a in argv):
            raise UserError("hydra.run.dir", next(_value(a) for a in argv if _key(a) == "hydra.run.dir"), "resume=<run dir> continues in that directory; drop hydra.run.dir")
        run_dir = Path(value).expanduser()
        if not (run_dir / ".hydra" / "overrides.yaml").is_file():
            raise UserError("resume", value, "not a run directory (no .hydra/overrides.yaml)")
        if (run_dir / "summary.json").is_file():
            raise UserError("resume", value, "this run already completed (it has summary.json); start a new run instead")
        saved = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
        saved = [str(o) for o in saved or [] if _key(str(o)) not in ("ckpt_path", "resume")]
        flags, extra = _split_flags([a for a in argv if _key(a) != "resume"])
        argv = [*flags, *saved, *extra, f"hydra.run.dir={_quote(str(run_dir))}", "ckpt_path=last"]
        check_resumable(argv, run_dir, "resume", value)
        print(f"[assay] resuming {run_dir} with: {shlex.join(saved + extra) or '(the defaults)'}", flush=True)
        return argv
    if any(_key(a) == "ckpt_path" and _value(a) == "last" for a in argv):
        dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        given = [_value(a) for a in argv if _key(a) == dir_key]
        if not given:
            raise UserError(
                "ckpt_path", "last",
                "a new run directory has no checkpoint to resume; resume a run with `assay-train resume=<run dir>`",
            )
        run_dir = Path(given[-1]).expanduser()
        if not multirun and (run_dir / ".hydra" / "config.yaml").is_file():
            check_resumable(argv, run_dir, "ckpt_path", "last")
    return argv


def check_resumable(argv: list[str], run_dir: Path, field: str, value: Any) -> None:
    """Refuse (one line) when the config this command composes differs from the run's saved one."""
    saved_file = run_dir / ".hydra" / "config.yaml"
    if not saved_file.is_file():
        raise UserError(field, value, f"{run_dir} has no .hydra/config.yaml, so its config cannot be checked")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from assay.paths import CONF_DIR
    from assay.preflight import job_overrides
    from assay.results import flatten

    parsed = job_overrides(argv)
    if parsed is None:
        return  # --cfg / --help: only prints
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=parsed[0])
    finally:
        GlobalHydra.instance().clear()
    now = flatten(OmegaConf.to_container(cfg, resolve=False))
    then = flatten(OmegaConf.to_container(OmegaConf.load(saved_file), resolve=False))
    differing = sorted(k for k in set(now) | set(then) if not RESUME_IGNORED.search(k) and now.get(k, "<absent>") != then.get(k, "<absent>"))
    if differing:
        shown = ", ".join(f"{k} (saved {then.get(k, '<absent>')!r}, now {now.get(k, '<absent>')!r})" for k in differing[:6])
        more = f" and {len(differing) - 6} more" if len(differing) > 6 else ""
        raise UserError(
            field, value,
            f"not resumed: the config differs from the run's saved one in {shown}{more}; resume with the saved config or start a new run",
        )


def no_checkpoint_notice(run_dir: Path) -> None:
    print(f"[assay] ckpt_path=last: no checkpoints/last.ckpt in {run_dir} yet; starting it from step 0", flush=True)
