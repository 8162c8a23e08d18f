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
import os
import re
import shlex
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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
    from assay.run.preflight import HYDRA_FLAGS_WITH_VALUE

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
        missing, unexpected = [k for k in ours if k not in saved], [k for k in saved if k not in ours]
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
    from assay.run.preflight import job_overrides
    from assay.run.results import flatten

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


# --------------------------------------------------------------------------------------------------
# Never overwritten, never shared: what a directory holds, the claim of a starting run, its lock

RUN_FILES = ("summary.json", "config.yaml", "provenance.json", "metrics.csv", "checkpoints", "server")
"""What a run leaves in its directory (Hydra writes ``.hydra/`` and may open ``train.log`` before the run starts: those alone are not a run)."""
LOCK_FILE = "run.lock"
FAILURE_FILE = "failure.json"
"""A run that stops with an error writes why (``status: failed``, the error line, when); ``summary.json``
stays the mark of a completed run."""
SUPERSEDED = "superseded"
_PHASE = ["starting"]
"""What the run in this process is doing (selection scoring, training, testing, saving): named when a
signal stops it."""


class Interrupted(UserError):
    """SIGTERM outside a training batch (scoring, testing, saving): the run stops there and says so,
    never ``completed``."""

    status = "interrupted"

    def __init__(self, signum: int, phase: str, run_dir: Path):
        import signal

        super().__init__("run", str(run_dir), f"stopped by {signal.Signals(signum).name} while {phase}; continue it with "
                         f"`assay-train resume={run_dir}` (from its last checkpoint, or from step 0 with the earlier files set aside)")


def enter_phase(name: str) -> None:
    """Mark the phase the run is in. ``ASSAY_FAULT_SIGNAL_AT_PHASE=<name>`` sends this process SIGTERM
    as the phase starts (fault injection for tests: a signal at an exact point)."""
    import signal

    _PHASE[0] = name
    if os.environ.get("ASSAY_FAULT_SIGNAL_AT_PHASE") == name:
        os.kill(os.getpid(), signal.SIGTERM)


def launching_process() -> bool:
    """False in the extra ranks of a multi-process run (they share rank 0's directory and claim)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        value = os.environ.get(key, "0")
        if value.isdigit() and int(value) != 0:
            return False
    return True


def held_run(run_dir: Path) -> str | None:
    """``"completed"``, ``"unfinished"`` (files of a run, no completed summary), or None (free)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    try:
        if json.loads((run_dir / "summary.json").read_text()).get("status") == "completed":
            return "completed"
    except (OSError, ValueError):
        pass
    if any(_written(run_dir / name) for name in RUN_FILES):
        return "unfinished"
    # a multi-stage run keeps each stage in a folder of its own
    stages = [p for p in run_dir.iterdir() if p.is_dir() and p.name not in (".hydra", SUPERSEDED) and p.name not in RUN_FILES]
    return "unfinished" if any(held_run(p) for p in stages) else None


def _written(path: Path) -> bool:
    """A file, or a folder with something in it (an empty ``checkpoints/`` may be a mount point made ready for the run)."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def refuse_held(run_dir: Path, field: str, value: Any, resuming: bool) -> None:
    """A new run never writes into a directory that holds a run; a resume never continues a completed one."""
    held = held_run(run_dir)
    if held == "completed":
        raise UserError(field, value, f"{run_dir} holds a completed run, and a run directory is never overwritten: choose a new directory")
    if held == "unfinished" and not resuming:
        raise UserError(field, value, f"{run_dir} holds a run that did not finish, and a run directory is never overwritten: "
                        f"continue it with `assay-train resume={run_dir}` (in a sweep: ckpt_path=last), or choose a new directory")


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/<pid>/stat): a pid reused by another
    process after a crash has another start time."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _lock_record() -> dict[str, Any]:
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
            "slurm_job": os.environ.get("SLURM_JOB_ID")}


def _lock_is_live(record: dict[str, Any]) -> bool:
    import socket

    if record.get("slurm_job") and record["slurm_job"] == os.environ.get("SLURM_JOB_ID"):
        # this very SLURM job before it was preempted and requeued (perhaps on another node):
        # SLURM runs one incarnation of a job at a time, so that one is gone
        return record.get("pid") == os.getpid() and record.get("host") == socket.gethostname()
    if record.get("host") != socket.gethostname():
        return True  # another machine's process: this one cannot tell, so it never takes the directory
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return record.get("process_start") in (None, _process_start(pid))


def refuse_locked(run_dir: Path) -> None:
    """One line when a live run holds ``run_dir`` (checked before Hydra writes anything into it)."""
    lock = Path(run_dir) / LOCK_FILE
    try:
        held = json.loads(lock.read_text())
    except (OSError, ValueError):
        return
    if held and _lock_is_live(held):
        raise UserError("run directory", str(run_dir), f"is in use by a live run (pid {held.get('pid')} on {held.get('host')}); "
                        f"wait for it to end or stop it (if it is dead on that machine, remove {lock})")


def acquire_lock(run_dir: Path) -> Path:
    """Take ``run.lock`` (pid, host, process start time). A lock of a live process is refused in one
    line; a lock left by a process that died (a kill -9, a lost node on this host) is taken over."""
    lock = Path(run_dir) / LOCK_FILE
    lock.parent.mkdir(parents=True, exist_ok=True)
    mine = _lock_record()
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            refuse_locked(run_dir)
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        return lock
    raise UserError("run directory", str(run_dir), f"could not take {lock} (another process keeps replacing it)")


def release_lock(lock: Path) -> None:
    try:
        if json.loads(lock.read_text()).get("pid") == os.getpid():
            lock.unlink()
    except (OSError, ValueError):
        pass


def set_aside_unfinished(run_dir: Path) -> Path | None:
    """A resume that finds no checkpoint starts from step 0: an earlier attempt's files (metrics, the
    per-sample store) move to ``superseded/<time>/`` first, so two attempts are never mixed."""
    from datetime import datetime, timezone

    run_dir = Path(run_dir)
    present = [p for p in run_dir.iterdir() if p.name not in (".hydra", LOCK_FILE, SUPERSEDED)] if run_dir.is_dir() else []
    if not any(p.name in RUN_FILES for p in present):
        return None
    target = run_dir / SUPERSEDED / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    target.mkdir(parents=True)
    for p in present:
        p.rename(target / p.name)
    return target


@contextmanager
def claimed(run_dir: Path, field: str, value: Any, resuming: bool, fresh_start: bool) -> Iterator[None]:
    """Hold ``run_dir`` for one run: refuse it when it holds another run (``refuse_held``), lock it
    for the run's life, set an earlier attempt aside when a resume starts from step 0
    (``fresh_start``), and on an error leave ``failure.json`` saying why. Only the launching process
    does this; the other ranks of a multi-process run share its claim."""
    if not launching_process():
        yield
        return
    refuse_held(run_dir, field, value, resuming)
    lock = acquire_lock(run_dir)
    stop = _stop_on_sigterm(Path(run_dir))
    try:
        (Path(run_dir) / FAILURE_FILE).unlink(missing_ok=True)
        if fresh_start:
            moved = set_aside_unfinished(run_dir)
            if moved is not None:
                print(f"[assay] {run_dir}: no checkpoint to resume; the earlier attempt's files moved to {moved}", flush=True)
        yield
    except BaseException as e:
        if not isinstance(e, SystemExit):
            _record_failure(Path(run_dir), e)
        raise
    finally:
        stop()
        release_lock(lock)


def _record_failure(run_dir: Path, exc: BaseException) -> None:
    from datetime import datetime, timezone

    from assay.errors import environment_problem

    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else getattr(exc, "status", "failed")
    problem = None if isinstance(exc, (UserError, KeyboardInterrupt)) else environment_problem(exc)
    if isinstance(exc, UserError):
        line = f"error: {exc}"
    elif isinstance(exc, KeyboardInterrupt):
        line = "interrupted (Ctrl-C)"
    else:
        line = f"error: {problem}" if problem else f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    try:
        write_json(run_dir / FAILURE_FILE, {"status": status, "error": line, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    except OSError:
        pass  # a full disk: the console line still says why


def _stop_on_sigterm(run_dir: Path):
    """While the run lives, SIGTERM raises :class:`Interrupted` naming the phase, where nothing else
    handles it (a plain command; under submitit or SLURM their handlers stay in charge). During
    training, Lightning and the preemption callback take the signal to the next batch boundary and
    checkpoint first; this handler then ends the run. Returns the function that restores the
    previous handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None
    _PHASE[0] = "starting"

    def handler(signum: int, frame) -> None:
        raise Interrupted(signum, _PHASE[0], run_dir)

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)
