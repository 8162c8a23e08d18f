"""Following SLURM jobs without accounting: sacct fails, squeue answers (stand-ins on PATH)."""

import logging
import os
import pickle
from pathlib import Path

import pytest
from submitit.core import utils as submitit_utils
from submitit.helpers import DelayedSubmission

from assay.run import slurm


def _tools(tmp_path: Path, squeue_lines: str) -> None:
    """sacct that fails as on a cluster without accounting, and squeue printing ``squeue_lines``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n")
    (tmp_path / "squeue.out").write_text(squeue_lines)
    (bin_dir / "squeue").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/squeue.calls\ncat {tmp_path}/squeue.out\n")
    for tool in ("sacct", "squeue"):
        (bin_dir / tool).chmod(0o755)


@pytest.fixture
def path_with_tools(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    return tmp_path


def test_without_accounting_states_come_from_squeue_and_lost_jobs_end(path_with_tools, caplog):
    tmp_path = path_with_tools
    _tools(tmp_path, "100_0|RUNNING\n100_1|PENDING\n")
    watcher = slurm.QueueWatcher(delay_s=1)
    for job in ("100_0", "100_1", "100_2"):
        watcher.register_job(job)
    with caplog.at_level(logging.WARNING, logger="assay.run.slurm"):
        watcher.update()
        watcher.update()
    assert watcher.use_squeue
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "sacct is unavailable (Slurm accounting storage is disabled)" in notices[0], notices
    assert "-r -t all -o %i|%T -j 100" in (tmp_path / "squeue.calls").read_text()
    assert watcher.get_state("100_0", mode="cache") == "RUNNING" and not watcher.is_done("100_0", mode="cache")
    assert not watcher.is_done("100_1", mode="cache")
    # Listed by neither sacct nor squeue twice in a row, and no result: vanished, so the wait ends.
    assert watcher.get_state("100_2", mode="cache") == slurm.VANISHED and watcher.is_done("100_2", mode="cache")

    _tools(tmp_path, "100_0|CANCELLED by 0\n100_1|RUNNING\n")
    watcher.update()
    assert watcher.is_done("100_0", mode="cache") and not watcher.is_done("100_1", mode="cache")
    assert slurm.describe_state(watcher.get_state("100_0", mode="cache")).startswith("cancelled")
    assert len(caplog.records) == 1  # no warning per poll


def test_sweeps_make_watched_jobs_only_while_they_run():
    from submitit.slurm import slurm as submitit_slurm

    original = submitit_slurm.SlurmJob
    with slurm.watched_jobs():
        # single jobs go through the executor's job_class, job arrays through the module's name
        assert submitit_slurm.SlurmExecutor.job_class is slurm.WatchedSlurmJob is submitit_slurm.SlurmJob
    assert submitit_slurm.SlurmJob is original and submitit_slurm.SlurmExecutor.job_class is original


def _submitted(folder: Path, job_id: str, num: int, overrides: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    submitit_utils.cloudpickle_dump(DelayedSubmission(print, overrides, "hydra.sweep.dir", num, f"job_id_for_{num}", {}), folder / f"{job_id}_submitted.pkl")


def test_job_states_tell_running_cancelled_and_failed(path_with_tools):
    tmp_path = path_with_tools
    folder = tmp_path / "sweep" / ".submitit"
    for num in range(5):
        _submitted(folder, f"200_{num}", num, [f"seed={num}"])
    # 0: running; 1: cancelled (still listed); 2: cancelled, gone from squeue, its log says so;
    # 3: gone without a trace; 4: finished with an error result.
    _tools(tmp_path, "200_0|RUNNING\n200_1|CANCELLED\n")
    (folder / "200_2_0_log.err").write_text("slurmstepd: error: *** JOB 202 ON node1 CANCELLED AT 2026-12-01T10:00:00 ***\n")
    (folder / "200_4_0_result.pkl").write_bytes(pickle.dumps(("error", "Traceback ...\nValueError: boom")))
    states = slurm.job_states(tmp_path / "sweep")
    assert states[0] == ("running", "SLURM job 200_0 is RUNNING")
    assert states[1][0] == "cancelled" and states[2] == ("cancelled", "SLURM job 200_2 was cancelled at 2026-12-01T10:00:00, no result")
    assert states[3][0] == "failed" and "no longer queued" in states[3][1]
    assert states[4] == ("failed", "SLURM job 200_4 raised: ValueError: boom")


@pytest.mark.parametrize("launcher, user_conf, asked", [
    ("LocalSlurmLauncher", None, "local"),  # submitted to this checkout's cluster: asked there
    ("LocalSlurmLauncher", "/site/slurm.conf", "/site/slurm.conf"),  # the user's SLURM_CONF wins
    ("SlurmLauncher", None, ""),  # a real cluster: the environment's (/etc/slurm)
])
def test_job_states_ask_the_cluster_the_sweep_was_submitted_to(path_with_tools, monkeypatch, launcher, user_conf, asked):
    tmp_path = path_with_tools
    state = tmp_path / "state"
    state.mkdir()
    (state / "slurm.conf").write_text("ClusterName=assaylocal\n")
    monkeypatch.setenv("ASSAY_SLURM_STATE", str(state))
    if user_conf:
        monkeypatch.setenv("SLURM_CONF", user_conf)
    else:
        monkeypatch.delenv("SLURM_CONF", raising=False)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text(f"hydra:\n  launcher:\n    _target_: hydra_plugins.assay_slurm_launcher.{launcher}\n")
    _submitted(tmp_path / "sweep" / ".submitit", "300_0", 0, ["seed=0"])
    _tools(tmp_path, "300_0|RUNNING\n")
    (tmp_path / "bin" / "squeue").write_text(f"#!/bin/sh\necho \"$SLURM_CONF\" > {tmp_path}/squeue.conf\ncat {tmp_path}/squeue.out\n")
    assert slurm.job_states(tmp_path / "sweep")[0] == ("running", "SLURM job 300_0 is RUNNING")
    expected = str(state / "slurm.conf") if asked == "local" else asked
    assert (tmp_path / "squeue.conf").read_text().strip() == expected
