"""Every run's provenance record: the commit and a dirty tree's diff (checked against git itself),
the versions and the machine; outside a checkout it says so."""

import hashlib
import json
import subprocess

import pytest

from assay import provenance


def _git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout laid out like assay's (src/assay/__init__.py), with one commit."""
    repo = tmp_path / "repo"
    (repo / "src" / "assay").mkdir(parents=True)
    (repo / "src" / "assay" / "__init__.py").write_text("VERSION = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    monkeypatch.setattr(provenance, "CHECKOUT", repo)
    provenance.code_state.cache_clear()
    yield repo
    provenance.code_state.cache_clear()


def test_a_clean_checkout_records_its_commit_and_no_diff(checkout, tmp_path):
    record = provenance.collect(tmp_path / "run")
    assert record["code"] == {"commit": _git(checkout, "rev-parse", "HEAD").strip(), "dirty": False}
    assert not (tmp_path / "run" / provenance.DIFF_FILE).exists()
    assert provenance.commit_label(record) == record["code"]["commit"][:10]


def test_a_dirty_checkout_records_the_diff_its_hash_and_untracked_files(checkout, tmp_path):
    (checkout / "src" / "assay" / "__init__.py").write_text("VERSION = 2\n")
    (checkout / "notes.txt").write_text("new file\n")
    record = provenance.collect(tmp_path / "run")
    code = record["code"]
    diff = (tmp_path / "run" / provenance.DIFF_FILE).read_text()
    assert code["dirty"] is True and code["diff_file"] == provenance.DIFF_FILE
    assert code["diff_sha256"] == hashlib.sha256(diff.encode()).hexdigest()
    assert "-VERSION = 1" in diff and "+VERSION = 2" in diff
    assert f"notes.txt sha256={hashlib.sha256(b'new file' + bytes([10])).hexdigest()}" in diff
    assert provenance.commit_label(record) == f"{code['commit'][:10]}+dirty:{code['diff_sha256'][:8]}"


def test_outside_a_checkout_the_record_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "CHECKOUT", tmp_path)
    provenance.code_state.cache_clear()
    try:
        record = provenance.collect()
    finally:
        provenance.code_state.cache_clear()
    assert record["code"]["commit"] is None and "not a git checkout" in record["code"]["note"]
    assert provenance.commit_label(record) == "unknown"


def test_versions_machine_and_command_are_recorded():
    import platform
    import sys

    import torch

    record = provenance.collect(world_size=2, data_order_fingerprint="abc")
    assert record["versions"]["torch"] == torch.__version__ and record["versions"]["python"] == platform.python_version()
    assert "pytorch-lightning" in record["versions"] and "transformers" in record["versions"]
    assert record["machine"]["world_size"] == 2 and record["machine"]["cpus"] >= 1 and record["machine"]["gpus"] == [
        torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    assert record["command"][0] == sys.executable and record["data_order_fingerprint"] == "abc"
    json.dumps(record)  # it goes into summary.json and the wandb config as it is
