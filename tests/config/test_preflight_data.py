"""The preflight checks every job's data files before any job of a sweep starts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_assay as _train

FAST = ["debug=fast", "logger=none", "trainer.max_steps=1"]


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(40)))
    return path


@pytest.mark.parametrize(
    "bad, key, why",
    [
        ("missing.jsonl", "data.train_file", "file does not exist"),
        ("empty.jsonl", "data.train_file", "file is empty"),
        ("a_directory", "data.train_file", "is a directory, not a file"),
    ],
)
@pytest.mark.cli
def test_bad_data_file_in_a_later_job_stops_the_sweep_before_it_starts(tmp_path, good, bad, key, why):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "a_directory").mkdir()
    r = _train(["-m", *FAST, "data=jsonl", f"data.train_file={good},{tmp_path / bad}"], tmp_path)
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert f"{key}='{tmp_path / bad}': {why}" in err and "in the job with overrides" in err, err
    assert not (tmp_path / "logs").exists()  # no job started, not even the good one


@pytest.mark.cli
def test_bad_test_file_of_a_single_run(tmp_path, good):
    r = _train([*FAST, "data=jsonl", f"data.train_file={good}", f"data.test_file={tmp_path / 'nope.jsonl'}"], tmp_path)
    err = r.stderr.strip()
    assert r.returncode == 2 and err == f"error: data.test_file='{tmp_path / 'nope.jsonl'}': file does not exist", err
    assert not (tmp_path / "logs").exists()
