"""run.lock: a live run's directory has one writer; a dead one's lock is taken over, also when SLURM
requeues the same job on another node."""

import json
import os
import socket
import subprocess
import sys

import pytest

from assay.errors import UserError
from assay.run.dirs import LOCK_FILE, acquire_lock, claimed, release_lock


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)


@pytest.mark.cli
def test_a_live_lock_refuses_and_a_dead_one_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "process_start": None}))
    with pytest.raises(UserError, match=f"in use by a live run \\(pid {os.getppid()}"):
        acquire_lock(tmp_path)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "process_start": "1"}))
    lock = acquire_lock(tmp_path)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    release_lock(lock)
    assert not lock.exists()


def test_a_reused_pid_is_not_the_process_that_took_the_lock(tmp_path):
    # our own pid, but another process start time: the process that wrote it is gone
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "process_start": "-1"}))
    release_lock(acquire_lock(tmp_path))


def test_another_hosts_lock_is_kept_unless_it_is_this_slurm_jobs_earlier_incarnation(tmp_path, monkeypatch):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "node-a", "process_start": "5", "slurm_job": "77"}))
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    with pytest.raises(UserError, match="on node-a"):
        acquire_lock(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # the same job, requeued onto this node after a preemption
    release_lock(acquire_lock(tmp_path))


def test_an_error_inside_a_claimed_directory_leaves_failure_json_and_no_lock(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError):
        with claimed(run, "hydra.run.dir", str(run), resuming=False, fresh_start=False):
            assert (run / LOCK_FILE).is_file()
            raise ValueError("boom")
    failure = json.loads((run / "failure.json").read_text())
    assert failure["status"] == "failed" and failure["error"] == "ValueError: boom" and not (run / LOCK_FILE).exists()


def test_ctrl_c_inside_a_claimed_directory_is_recorded_as_interrupted(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with claimed(run, "hydra.run.dir", str(run), resuming=False, fresh_start=False):
            raise KeyboardInterrupt
    assert json.loads((run / "failure.json").read_text())["status"] == "interrupted"
