"""A tiny study end to end, the way a user runs it: `assay-study run` is killed after its first run,
run again (it launches only what is not completed at this commit, and resumes nothing twice), then
`assay-study report` writes results.md, whose numbers are recomputed here from runs.csv with scipy."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from scipy import stats

from tests.conftest import HEAD

pytestmark = pytest.mark.integration
STUDY = [str(Path(sys.executable).with_name("assay-study"))]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


@pytest.mark.cli
def test_study_run_kill_rerun_report(tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    (root / "study.yaml").write_text(yaml.safe_dump({
        "question": "Does a 3x learning rate lower the test loss after two steps?",
        "base": ["debug=fast", "logger=csv", "trainer.max_steps=2", "trainer.threads=1"],
        "arms": {"low": ["optim.lr=1e-3"], "high": ["optim.lr=3e-3"]},
        "seeds": [0, 1],
        "primary": "test/loss",
        "comparisons": [{"arm": "high", "baseline": "low"}],
    }, sort_keys=False))
    summaries = lambda: sorted(root.glob("runs/*/seed*/summary.json"))  # noqa: E731
    proc = subprocess.Popen([*STUDY, "run", str(root)], env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while not summaries() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and the training process under it
    proc.wait()
    first = {p: p.read_text() for p in summaries()}
    assert 1 <= len(first) <= 2  # the first arm's seeds run before the second arm starts

    again = subprocess.run([*STUDY, "run", str(root)], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"4 runs, {len(first)} already done" in again.stdout
    assert {p: p.read_text() for p in first} == first  # completed runs were not run again
    assert len(summaries()) == 4
    for p in summaries():
        assert json.loads(p.read_text())["provenance"]["code"]["commit"] == HEAD

    rep = subprocess.run([*STUDY, "report", str(root)], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    runs = pd.read_csv(root / "runs.csv")
    assert list(runs[["arm", "seed", "status"]].itertuples(index=False, name=None)) == [
        ("low", 0, "completed"), ("low", 1, "completed"), ("high", 0, "completed"), ("high", 1, "completed")]
    high, low = (runs[runs["arm"] == a].set_index("seed")["test/loss"] for a in ("high", "low"))
    row = next(line for line in (root / "results.md").read_text().splitlines() if line.startswith("| high | low | test/loss |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[4].split(" [")[0]) == pytest.approx(float((high - low).mean()), rel=1e-3, abs=1e-4)
    p = stats.ttest_rel(high, low).pvalue
    assert float(cells[5]) == pytest.approx(p, rel=1e-3) and float(cells[6]) == pytest.approx(p, rel=1e-3)  # a family of one
    assert "n < 5" in cells[8] and f"commit {HEAD[:10]}" in (root / "results.md").read_text()

    status = subprocess.run([*STUDY, "status", str(root)], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert status.stdout.splitlines() == ["low: 2 completed", "high: 2 completed"]
