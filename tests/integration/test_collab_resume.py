"""A collaborative run that is killed resumes at its last completed round; a client left with no
data after selection is one line. (Apart from test_collab_run.py so the two modules run side by side.)"""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.integration.test_collab_run import TINY, assay_train

pytest.importorskip("flwr")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.cli
def test_killed_simulation_resumes_at_the_last_completed_round(tmp_path):
    """The server process is killed (SIGKILL, by fault injection) right after round 1 is saved."""
    run = tmp_path / "run"
    args = [*TINY, "selection=none", "collab.rounds=2", f"hydra.run.dir={run}", "ckpt_path=last"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ASSAY_FAULT_KILL_AFTER_ROUND": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "assay.train", *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert proc.wait(timeout=900) == -signal.SIGKILL
    finally:
        try:  # the simulation's helper processes share the run's process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    state = run / "server" / "state.json"
    done = json.loads(state.read_text())["rounds_done"]
    assert done == 1 and not (run / "summary.json").is_file()
    first = (run / "server" / "received.jsonl").read_text().splitlines()

    again = assay_train(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from_round"] == done
    assert [h["round"] for h in summary["collab"]["rounds"]] == [1, 2]
    later = (run / "server" / "received.jsonl").read_text().splitlines()[len(first):]
    assert {json.loads(line)["phase"] for line in later} == {f"train:{r}" for r in range(done + 1, 3)}


@pytest.mark.cli
def test_client_with_no_data_after_selection_is_one_line(tmp_path):
    """Random scores in [0, 1) against a threshold of 2 keep nothing: the server names the client."""
    proc = assay_train([*TINY, "selection=random", "selection/selector=threshold", "selection.selector.threshold=2.0", "collab.warmup_rounds=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr.split(errors[0])[-1]
    assert "collab.clients[0]='copy': client 0 kept no examples after selection (selection/selector=threshold)" in errors[0]
    # the run directory says why it has no summary (assay-compare and assay-study read it)
    failure = json.loads((tmp_path / "run" / "failure.json").read_text())
    assert failure["status"] == "failed" and failure["error"] == errors[0] and not (tmp_path / "run" / "run.lock").exists()
