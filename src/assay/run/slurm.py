"""A sweep on SLURM through submitit, on clusters with and without an accounting database.

submitit follows its jobs with ``sacct``. Without accounting (``AccountingStorageType=none``, as on
small clusters and the test cluster of ``slurm/local_cluster.sh``) every call fails, the state stays
UNKNOWN, and a job that was cancelled or vanished never produces its result file: the submitting
command polls forever, warning at every poll. Here the first failing ``sacct`` switches the sweep
to ``squeue`` (one notice). ``squeue -t all`` lists a finished job for ``MinJobAge`` seconds with its
final state (CANCELLED, FAILED, TIMEOUT, ...); a job it no longer lists, without a result file, has
vanished. Either way the wait ends and that job is reported failed, while the others are still
waited for and collected.

``job_states`` reads the same facts for ``assay-compare``: which jobs of a sweep are still queued or
running, which were cancelled or failed, and why. A sweep submitted to the local cluster
(``hydra/launcher=slurm_local``) is looked up there, as its launcher submitted it (``LocalClusterMixin``).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from submitit.core import utils as submitit_utils
from submitit.slurm import slurm as submitit_slurm

log = logging.getLogger(__name__)

# States of a job that may still produce its result (squeue's and sacct's names).
LIVE = {
    "READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED", "CONFIGURING",
    "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT", "REQUEUE_FED", "REQUEUE_HOLD",
}
VANISHED = "VANISHED"
ABSENT_POLLS = 2
"""A job missing from squeue this many polls in a row (and without a result file) has vanished."""


class QueueWatcher(submitit_slurm.SlurmInfoWatcher):
    """submitit's sacct watcher, falling back to squeue for good once sacct fails."""

    def __init__(self, delay_s: int = 30) -> None:
        super().__init__(delay_s=delay_s)
        self.use_squeue = False
        self._absent: dict[str, int] = {}
        self._last_error = ""

    def _make_command(self) -> Optional[list[str]]:
        command = super()._make_command()
        if command is None or not self.use_squeue:
            return command
        arrays = sorted({job.split("_")[0] for job in self._registered - self._finished})
        return ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(arrays)]

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode).upper().split()[0] not in LIVE

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=120)
            ok, error = out.returncode == 0, (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        except (OSError, subprocess.TimeoutExpired) as e:
            out, ok, error = None, False, f"{type(e).__name__}: {e}"
        if not ok and not self.use_squeue:
            self.use_squeue = True
            log.warning(f"sacct is unavailable ({error}); following the jobs with squeue (no SLURM accounting on this cluster)")
            return self.update()
        if self.use_squeue and not ok and "Invalid job id" in error:
            ok, out = True, None  # every job of the listed arrays is gone from the controller
        if ok:
            text = out.stdout if out is not None else ""
            self._info_dict.update(self.read_squeue(text) if self.use_squeue else self.read_info(text))
            self._last_error = ""
        elif error != self._last_error:  # one line per new error, not one per poll
            log.warning(f"{command[0]} failed ({error}); job states may be stale")
            self._last_error = error
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def read_squeue(self, text: str) -> dict[str, dict[str, str]]:
        listed = {}
        for line in text.splitlines():
            job, _, state = line.strip().partition("|")
            if job:
                listed[job] = {"State": state.strip() or "UNKNOWN"}
        for job in self._registered - self._finished:
            if job in listed:
                self._absent.pop(job, None)
            else:
                self._absent[job] = self._absent.get(job, 0) + 1
                if self._absent[job] >= ABSENT_POLLS:
                    listed[job] = {"State": VANISHED}
        return listed


class WatchedSlurmJob(submitit_slurm.SlurmJob):
    """A SLURM job whose end is always seen; one that ends without a result is a failed job of the
    sweep (the other jobs are still collected) instead of an exception that abandons the wait."""

    watcher = QueueWatcher()

    def results(self) -> list[Any]:
        try:
            return super().results()
        except (submitit_utils.UncompletedJobError, submitit_utils.FailedJobError) as e:
            from hydra.core.utils import JobReturn, JobStatus

            overrides, num = _submitted_job(self.paths.submitted_pickle)
            state = self.watcher.get_state(self.job_id, mode="cache")
            what = describe_state(state) if isinstance(e, submitit_utils.UncompletedJobError) else "failed (see its log)"
            message = f"sweep job {num} ({' '.join(overrides) or 'no overrides'}), SLURM job {self.job_id}: {what}; log: {self.paths.stderr}"
            log.error(message)
            return [JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=SweepJobFailed(message))]


class SweepJobFailed(RuntimeError):
    """A sweep job that ended without a result (cancelled, vanished, failed outside the task)."""


def describe_state(state: str) -> str:
    state = state.upper()
    if state == VANISHED:
        return "vanished from the queue without a result (cancelled, or lost with its node)"
    if state.startswith("CANCELLED"):
        return "cancelled (scancel or an administrator), no result"
    return f"ended {state} without a result"


def _submitted_job(pickle_path: Path) -> tuple[list[str], Any]:
    """The sweep job's overrides and number, from the pickle submitit runs it from."""
    try:
        delayed = submitit_utils.pickle_load(pickle_path)
        return list(delayed.args[0]), delayed.args[2]
    except Exception:
        return [], "?"


@contextlib.contextmanager
def watched_jobs() -> Iterator[None]:
    """While a sweep is submitted and awaited, submitit makes WatchedSlurmJobs (its executor names the
    class once for single jobs and the module's ``SlurmJob`` for job arrays)."""
    executor = submitit_slurm.SlurmExecutor
    previous = executor.job_class, submitit_slurm.SlurmJob
    executor.job_class = submitit_slurm.SlurmJob = WatchedSlurmJob
    try:
        yield
    finally:
        executor.job_class, submitit_slurm.SlurmJob = previous


class SweepWaitMixin:
    """For a submitit launcher: every job's end is seen (see the module doc). The launcher class itself
    is ``hydra_plugins.assay_slurm_launcher.SlurmLauncher``: Hydra takes launchers only from there."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        with watched_jobs():
            results = super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]
        failed = [r for r in results if r.status.name == "FAILED"]
        if failed:
            log.error(f"{len(failed)} of {len(results)} sweep jobs did not complete")
        return results


class LocalClusterMixin:
    """For the ``slurm_local`` profiles: submit to this checkout's ``slurm/local_cluster.sh`` cluster
    (``SLURM_CONF``, unless the user set one; ``assay.run.cluster.use_local_cluster``). The preflight
    has set it already for ``assay-train``; this covers any other caller of the launcher."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        from assay.run.cluster import use_local_cluster

        use_local_cluster()
        return super().launch(job_overrides, initial_job_idx)  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# Reading a sweep's job states (assay-compare)


def job_states(sweep_dir: Path) -> dict[int, tuple[str, str]]:
    """Sweep job number -> (status, reason) for the jobs submitit ran from ``<sweep>/.submitit``:
    ``running`` (queued or running), ``cancelled``, or ``failed``; jobs with a result that succeeded
    are left out (their run directory says how they ended)."""
    folder = Path(sweep_dir) / ".submitit"
    if not folder.is_dir():
        return {}
    jobs: dict[int, tuple[float, str]] = {}  # job num -> (submitted at, SLURM job id); the latest submission wins
    for pkl in folder.glob("*_submitted.pkl"):
        job_id = pkl.name[: -len("_submitted.pkl")]
        _, num = _submitted_job(pkl)
        if isinstance(num, int) and (num not in jobs or pkl.stat().st_mtime > jobs[num][0]):
            jobs[num] = (pkl.stat().st_mtime, job_id)
    queue = _queue_states([job_id for _, job_id in jobs.values()], _slurm_conf(Path(sweep_dir)))
    states = {}
    for num, (_, job_id) in jobs.items():
        paths = submitit_utils.JobPaths(folder, job_id=job_id, task_id=0)
        result = paths.result_pickle
        if result.is_file():
            try:
                outcome, value = pickle.loads(result.read_bytes())[:2]
            except Exception:
                outcome, value = "error", "unreadable result file"
            if outcome != "success":
                states[num] = ("failed", f"SLURM job {job_id} raised: {_last_line(value)}")
            elif getattr(value, "status", None) is not None and value.status.name == "FAILED":
                states[num] = ("failed", f"SLURM job {job_id}: {_last_line(getattr(value, '_return_value', ''))}")
            continue
        state = queue.get(job_id)
        err = paths.stderr
        cancelled = err.is_file() and re.search(r"\*\*\* (JOB|STEP) \S+ ON \S+ CANCELLED AT (\S+)", _tail(err))
        if state is not None and state.split()[0] in LIVE:
            states[num] = ("running", f"SLURM job {job_id} is {state}")
        elif cancelled or (state or "").startswith("CANCELLED"):
            when = f" at {cancelled.group(2)}" if cancelled else ""
            states[num] = ("cancelled", f"SLURM job {job_id} was cancelled{when}, no result")
        elif state is not None:
            states[num] = ("failed", f"SLURM job {job_id} ended {state} without a result")
        elif queue.get("__error__"):
            states[num] = ("failed", f"SLURM job {job_id}: no result, and its state is unknown ({queue['__error__']})")
        else:
            states[num] = ("failed", f"SLURM job {job_id} is no longer queued and left no result (cancelled or lost)")
    return states


def _slurm_conf(sweep_dir: Path) -> Optional[str]:
    """The SLURM_CONF to ask about a sweep's jobs: the local cluster's for a sweep its launcher submitted
    there (``multirun.yaml`` names the launcher) when SLURM_CONF is unset; else None (the environment's)."""
    import os

    from assay.run.cluster import LOCAL_LAUNCHER, local_cluster_conf

    if os.environ.get("SLURM_CONF"):
        return None
    try:
        text = (sweep_dir / "multirun.yaml").read_text()
    except OSError:
        return None
    if f"assay_slurm_launcher.{LOCAL_LAUNCHER}" not in text:
        return None
    conf = local_cluster_conf()
    return str(conf) if conf is not None and conf.is_file() else None


def _queue_states(job_ids: list[str], slurm_conf: Optional[str] = None) -> dict[str, str]:
    """SLURM job id -> state from squeue (``__error__`` when squeue cannot answer); ``slurm_conf``: the
    cluster to ask, else the environment's."""
    import os

    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    env = {**os.environ, "SLURM_CONF": slurm_conf} if slurm_conf else None
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(arrays)], capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"__error__": f"squeue: {type(e).__name__}"}
    if out.returncode != 0:
        error = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        return {} if "Invalid job id" in error else {"__error__": f"squeue: {error}"}
    return {job: state for job, _, state in (line.strip().partition("|") for line in out.stdout.splitlines()) if job}


def _tail(path: Path, size: int = 65536) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode("utf-8", "replace")


def _last_line(value: Any) -> str:
    lines = [line for line in str(value).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(value).__name__
