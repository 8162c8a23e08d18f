"""assay-compare names the commit of every group, refuses to pool runs of different commits unless
told, and writes a provenance footer under its tables and on its plots."""

import json

import pytest
import yaml

from assay.compare import compare
from assay.compare.cli import main
from assay.errors import UserError

A, B = "a" * 40, "b" * 40


def _run(root, name, lr, seed, loss, commit, torch="2.13.0"):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "optim": {"lr": lr}}))
    provenance = {"code": {"commit": commit, "dirty": False}, "versions": {"torch": torch, "python": "3.11.7"}}
    (d / "summary.json").write_text(json.dumps({"status": "completed", "metrics": {"test/loss": loss}, "provenance": provenance}))
    return str(d)


def test_each_group_names_its_commit_and_the_footer_its_code(tmp_path):
    runs = [_run(tmp_path, f"r{i}", lr, seed, 1.0 + i, A) for i, (lr, seed) in enumerate([(0.1, 0), (0.1, 1), (0.2, 0), (0.2, 1)])]
    result = compare(runs, by=["optim.lr"], metrics=["test/loss"], out=tmp_path / "out", quiet=True, plots=True)
    assert list(result["table"]["commit"]) == [A[:10], A[:10]]
    text = (tmp_path / "out" / "compare.md").read_text()
    assert f"| 0.1 | 2 | 1.5000 ± 0.7071 | {A[:10]} |" in text
    assert f"Provenance: commit {A[:10]} (4 runs)" in text and "Versions: python 3.11.7, torch 2.13.0" in text and "Written " in text
    runs_csv = (tmp_path / "out" / "runs.csv").read_text()
    assert runs_csv.splitlines()[0].startswith("run,source,status,commit,")


def test_runs_of_two_commits_in_one_group_are_refused_unless_allowed(tmp_path, capsys):
    runs = [_run(tmp_path, "r0", 0.1, 0, 1.0, A), _run(tmp_path, "r1", 0.1, 1, 2.0, B, torch="2.14.1")]
    with pytest.raises(UserError, match="pool runs of different commits .*--allow-mixed-commits"):
        compare(runs, by=["optim.lr"], metrics=["test/loss"], out=tmp_path / "out", quiet=True, plots=False)
    with pytest.raises(SystemExit) as e:
        main([*runs, "--by", "optim.lr", "--metric", "test/loss", "--out", str(tmp_path / "cli"), "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    result = compare(runs, by=["optim.lr"], metrics=["test/loss"], out=tmp_path / "out", quiet=True, plots=False, allow_mixed_commits=True)
    assert list(result["table"]["commit"]) == [f"{A[:10]}, {B[:10]}"]
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "**Pooled across commits**" in text and "torch 2.13.0 / 2.14.1" in text


def test_different_commits_in_different_groups_are_not_pooling(tmp_path):
    runs = [_run(tmp_path, "r0", 0.1, 0, 1.0, A), _run(tmp_path, "r1", 0.2, 0, 2.0, B)]
    result = compare(runs, by=["optim.lr"], metrics=["test/loss"], out=tmp_path / "out", quiet=True, plots=False)
    assert list(result["table"]["commit"]) == [A[:10], B[:10]]


def test_wandb_provenance_keys_are_facts_not_grouping_keys():
    from assay.compare.readers import split_provenance

    own, origin = split_provenance({"seed": 1, "provenance.code.commit": A, "provenance.code.dirty": False, "provenance.machine.cpus": 2})
    assert own == {"seed": 1} and origin == {"code": {"commit": A, "dirty": False}, "machine": {"cpus": 2}}
