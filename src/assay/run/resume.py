"""Resuming a run in place.

``assay-train resume=<run dir>`` replays that run's own command-line overrides
(``.hydra/overrides.yaml``) into the same directory with ``ckpt_path=last``. Before Hydra writes
anything, the composed config is compared with the one the run saved (``.hydra/config.yaml``); a
run whose config would differ is refused with the differing keys named, and the directory is left
exactly as it was. A checkpoint to resume from is checked first: readable (``ckpt_path``), and of
this model's shape once the model is built (``check_checkpoint_fits``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from assay.errors import UserError
from assay.run.dirs import launching_process, refuse_held, refuse_locked
from assay.run.results import flatten
from assay.run.sweeps import HYDRA_FLAGS_WITH_VALUE, job_overrides

# Keys that may differ between a run and its resumption: where files go and how to resume.
RESUME_IGNORED = re.compile(r"^(ckpt_path|allow_order_change)$|^paths\.")


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
        refuse_locked(run_dir)
        check_checkpoint_file(run_dir / "checkpoints" / "last.ckpt", "resume", value)
        if (run_dir / "summary.json").is_file():
            raise UserError("resume", value, "this run already completed (it has summary.json); start a new run instead")
        saved = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
        saved = [str(o) for o in saved or [] if _key(str(o)) not in ("ckpt_path", "resume")]
        flags, extra = _split_flags([a for a in argv if _key(a) != "resume"])
        argv = [*flags, *saved, *extra, f"hydra.run.dir={_quote(str(run_dir))}", "ckpt_path=last"]
        check_resumable(argv, run_dir, "resume", value)
        print(f"[assay] resuming {run_dir} with: {shlex.join(saved + extra) or '(the defaults)'}", flush=True)
        return argv
    given_dir = [_value(a) for a in argv if _key(a) == "hydra.run.dir"]
    if given_dir and not multirun and launching_process():
        # before Hydra writes .hydra/ into it: a directory holding a run is refused untouched
        refuse_held(Path(given_dir[-1]).expanduser(), "hydra.run.dir", given_dir[-1], resuming=any(_key(a) == "ckpt_path" for a in argv))
        refuse_locked(Path(given_dir[-1]).expanduser())
    for ckpt in [_value(a) for a in argv if _key(a) == "ckpt_path" and _value(a) not in ("last", "null", "")]:
        check_checkpoint_file(Path(ckpt).expanduser(), "ckpt_path", ckpt)
    if given_dir and not multirun and any(_key(a) == "ckpt_path" and _value(a) == "last" for a in argv):
        check_checkpoint_file(Path(given_dir[-1]).expanduser() / "checkpoints" / "last.ckpt", "ckpt_path", "last")
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


def check_checkpoint_file(path: Path, field: str, value: Any) -> None:
    """A checkpoint file that torch cannot read (truncated by a kill or a full disk, or not a
    checkpoint at all) is refused before anything is written; torch's checkpoints are zip archives,
    whose directory sits at the end of the file, so a truncated one has none. A folder (a sharded
    checkpoint) is left to its loader."""
    import zipfile

    if path.is_file() and not zipfile.is_zipfile(path):
        raise UserError(field, value, f"{path} is not a readable checkpoint (truncated or not a torch checkpoint); "
                        "resume from another checkpoint (keep_checkpoints=true keeps every one) or start a new run")


def check_checkpoint_fits(path: Path, module: Any, field: str, value: Any) -> None:
    """A checkpoint saved from a model of another shape (another width, depth or vocabulary) is
    refused with one line naming a parameter or two, before Lightning's strict restore fails with
    one line per parameter. A folder (a sharded checkpoint) is left to its loader."""
    if not path.is_file():
        return
    import pickle

    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)  # mmap: the tensors stay on disk
    except (RuntimeError, pickle.UnpicklingError, EOFError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(field, value, f"{path} is not a readable checkpoint ({reason}); resume from another checkpoint or start a new run") from None
    saved = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict):
        raise UserError(field, value, f"{path} holds no model weights (no state_dict): not a checkpoint assay-train wrote")
    ours = module.state_dict()
    shape = lambda t: list(getattr(t, "shape", []))  # noqa: E731
    differing = [k for k in ours if k in saved and shape(ours[k]) != shape(saved[k])]
    if differing:
        shown = "; ".join(f"{k} is {shape(saved[k])} there, {shape(ours[k])} here" for k in differing[:2])
        more = f" (and {len(differing) - 2} more)" if len(differing) > 2 else ""
        raise UserError(field, value, f"{path} was saved from a model of another shape: {shown}{more}; "
                        "resume with the model config it was trained with, or start a new run without ckpt_path")
    if getattr(module, "strict_loading", True):
        from assay.run.frozen_base import frozen_keys, left_out

        rebuilt = set(frozen_keys(module)) if left_out(ckpt) else set()  # a LoRA run's base: rebuilt, not saved
        missing, unexpected = [k for k in ours if k not in saved and k not in rebuilt], [k for k in saved if k not in ours]
        if missing or unexpected:
            parts = [f"{len(missing)} parameter(s) of this model are not in it (e.g. {missing[0]})" if missing else "",
                     f"it has {len(unexpected)} this model lacks (e.g. {unexpected[0]})" if unexpected else ""]
            raise UserError(field, value, f"{path} was saved from another model or objective: {'; '.join(x for x in parts if x)}; "
                            "resume with the config it was trained with, or start a new run without ckpt_path")


def check_resumable(argv: list[str], run_dir: Path, field: str, value: Any) -> None:
    """Refuse (one line) when the config this command composes differs from the run's saved one."""
    saved_file = run_dir / ".hydra" / "config.yaml"
    if not saved_file.is_file():
        raise UserError(field, value, f"{run_dir} has no .hydra/config.yaml, so its config cannot be checked")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from assay.paths import CONF_DIR

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


def checkpoint_to_resume(ckpt: str | None, run_dir: Path) -> str | None:
    """The checkpoint the run continues from (``ckpt_path``; ``last`` = the run directory's
    ``checkpoints/last.ckpt``, also for a requeued SLURM job), or None for a start from step 0."""
    from assay.run.preemption import requeued

    if ckpt in (None, "") and requeued():
        ckpt = "last"  # a requeued SLURM job continues where it stopped, in the same run directory
    if ckpt in (None, ""):
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    # A checkpoint is a file, or a folder of shards under DeepSpeed (and sharded FSDP state dicts).
    if ckpt == "last" and not path.exists():
        # nothing to resume yet: start fresh, in this directory
        print(f"[assay] ckpt_path=last: no checkpoints/last.ckpt in {run_dir} yet; starting it from step 0", flush=True)
        return None
    if not path.exists():
        raise UserError("ckpt_path", ckpt, "checkpoint does not exist (neither a file nor a sharded checkpoint folder)")
    return str(path)
