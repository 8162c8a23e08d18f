"""Run directories: one per run, never shared, never overwritten.

Unique directories are claimed by ``assay.paths``'s ``assay.unique`` resolver. Hydra caches the
resolved value in the config (and copies that cache into every job of a sweep, also into the pickles
a SLURM job and its requeues start from), so a run claims exactly one directory. Here: what a run
writes (its config, its choices, JSON written whole), and its claim on the directory: refused when the
directory holds another run, locked for the run's life, an earlier attempt set aside, and
``failure.json`` saying why when it stops with an error. Resuming in place is ``assay.run.resume``.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf, open_dict

from assay.errors import UserError
from assay.registry import GROUPS


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
