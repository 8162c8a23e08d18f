"""The other commands' bad input, as data: command line -> what its one `error:` line must say (exit 2,
no traceback, no usage block). A new case is one row."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _setup_runs(tmp_path):
    """A finished-looking run (for assay-compare), a run whose checkpoint is random bytes (for resume)
    and a plain file (for --out)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "summary.json").write_text(json.dumps({"status": "completed", "metrics": {"test/loss": 1.0}}))
    (run / "metrics.csv").write_text("step,train/loss\n1,2.0\n")
    broken = tmp_path / "broken"
    (broken / ".hydra").mkdir(parents=True)
    (broken / ".hydra" / "overrides.yaml").write_text("- debug=fast\n")
    (broken / "checkpoints").mkdir()
    (broken / "checkpoints" / "last.ckpt").write_bytes(os.urandom(4096))
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "nonnum.csv").write_text("w/a,w/b,loss\n0.5,0.5,x\n0.2,0.8,1.0\n0.1,0.9,1.1\n")


CASES = {
    "compare: unknown flag": (["assay.compare.cli", "run", "--bogus"], "assay-compare: unrecognized arguments: --bogus"),
    "compare: --out is a file": (["assay.compare.cli", "run", "--out", "a_file"], "--out='a_file': is a file"),
    "compare: a curve no run has": (["assay.compare.cli", "run", "--curve", "train/nope", "--no-plots"], "--curve='train/nope': no run's metrics.csv has it"),
    "mix: zero repetition": (["assay.mixsearch.cli", "propose", "x", "--max-repetition", "0"], "--max-repetition: '0' must be a finite number > 0"),
    "mix: negative KL weight": (["assay.mixsearch.cli", "propose", "x", "--kl", "-1"], "--kl: '-1' must be a finite number >= 0"),
    "mix: zero samples": (["assay.mixsearch.cli", "propose", "x", "--samples", "0"], "--samples: '0' must be a finite number > 0"),
    "mix fit: an empty table": (["assay.mixsearch.cli", "fit", "empty.csv", "--target", "loss"], "source='empty.csv': is empty"),
    "mix fit: a target that is not a number": (["assay.mixsearch.cli", "fit", "nonnum.csv", "--target", "loss"], "nonnum.csv column loss='x': is not a number (row 0"),
    "fetch: unknown model": (["assay.models.fetch", "gpt5"], "assay-fetch: argument names: invalid choice: 'gpt5'"),
    "fetch: ASSAY_CACHE is a file": (["assay.models.fetch", "minilm"], "ASSAY_CACHE="),
    "study: no folder": (["assay.study.cli", "run"], "assay-study run: the following arguments are required: study"),
    "train: resume from random bytes": (["assay.train", "resume=broken"], "broken/checkpoints/last.ckpt is not a readable checkpoint"),
}


@pytest.mark.cli
@pytest.mark.parametrize("name", list(CASES))
def test_bad_command_is_one_line(name, tmp_path):
    _setup_runs(tmp_path)
    argv, expected = CASES[name]
    before = sorted(p.name for p in (tmp_path / "broken").rglob("*"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"ASSAY_CACHE": str(tmp_path / "a_file")} if "ASSAY_CACHE" in expected else {}), "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-W", "ignore", "-m", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert expected in lines[0], lines[0]
    assert sorted(p.name for p in (tmp_path / "broken").rglob("*")) == before  # nothing written where it was refused
