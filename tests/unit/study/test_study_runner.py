"""The study runner's decisions before it launches anything: completed runs of this commit are
skipped, of another commit refused unless allowed, killed runs of another commit moved aside (never
overwritten), a dirty tree warned about; each launch is one Hydra multirun over the seeds left."""

import json

import pytest
import yaml

from assay import provenance
from assay.errors import UserError
from assay.study import load, run, states
from assay.study.spec import Cell

HERE = "e" * 40
OTHER = "f" * 40


@pytest.fixture
def at_commit(monkeypatch):
    def set_state(dirty=False):
        record = {"commit": HERE, "dirty": dirty, **({"diff_sha256": "0" * 64} if dirty else {})}
        monkeypatch.setattr(provenance, "code_state", lambda: (record, "diff" if dirty else ""))
        return provenance.commit_label({"code": record})
    return set_state


@pytest.fixture
def spec(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.yaml").write_text(yaml.safe_dump({
        "base": ["debug=fast"], "arms": {"a": ["optim.lr=1"], "b": ["optim.lr=2"]}, "seeds": [0, 1, 2],
        "primary": "test/loss", "comparisons": [{"arm": "b", "baseline": "a"}]}, sort_keys=False))
    return load(tmp_path / "s")


def _completed(spec, cell, seed, commit):
    d = spec.run_dir(cell, seed)
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"status": "completed", "metrics": {}, "provenance": {"code": {"commit": commit, "dirty": False}}}))


def _killed(spec, cell, seed, commit):
    d = spec.run_dir(cell, seed)
    d.mkdir(parents=True)
    (d / provenance.RECORD_FILE).write_text(json.dumps({"code": {"commit": commit, "dirty": False}}))
    return d


def test_only_what_is_not_completed_at_this_commit_is_launched(spec, at_commit):
    at_commit()
    _completed(spec, Cell("a"), 0, HERE)
    _completed(spec, Cell("a"), 2, HERE)
    _killed(spec, Cell("b"), 1, HERE)  # same commit: resumed in place (ckpt_path=last)
    lines = []
    assert run(spec, dry_run=True, echo=lines.append) == 0
    assert "6 runs, 2 already done" in lines[0]
    launches = [line for line in lines if line.startswith("[assay-study] a:") or line.startswith("[assay-study] b:")]
    assert len(launches) == 2
    assert " seed=1 " in launches[0] and f"hydra.sweep.dir={spec.root.resolve()}/runs/a " in launches[0]
    assert " seed=0,1,2 " in launches[1] and "'hydra.sweep.subdir=seed${seed}' ckpt_path=last" in launches[1]


def test_completed_runs_of_another_commit_are_refused_unless_allowed(spec, at_commit):
    at_commit()
    _completed(spec, Cell("a"), 0, OTHER)
    with pytest.raises(UserError, match=r"1 completed run\(s\) come from other code \(ffffffffff\).*--allow-mixed-commits"):
        run(spec, dry_run=True, echo=lambda _: None)
    lines = []
    run(spec, dry_run=True, allow_mixed_commits=True, echo=lines.append)
    assert "6 runs, 1 already done" in lines[0]


@pytest.mark.cli
def test_a_killed_run_of_another_commit_is_moved_aside_not_overwritten(spec, at_commit, tmp_path, monkeypatch):
    at_commit()
    old = _killed(spec, Cell("b"), 2, OTHER)
    (old / "metrics.csv").write_text("step,loss\n1,2.0\n")
    stub = tmp_path / "assay-train"
    stub.write_text("#!/bin/sh\nexit 0\n")  # launches nothing: only the runner's own decisions are under test
    stub.chmod(0o755)
    monkeypatch.setenv("ASSAY_TRAIN", str(stub))
    lines = []
    assert run(spec, echo=lines.append) == 1  # nothing completed: the runner says so and fails
    moved = list((spec.root / "superseded" / "runs" / "b").glob("seed2-*"))
    assert len(moved) == 1 and (moved[0] / "metrics.csv").read_text() == "step,loss\n1,2.0\n" and not old.exists()
    assert any("moved aside" in line for line in lines) and any("0 of 6 runs completed" in line for line in lines)
    assert (spec.root / "logs" / "a.log").is_file()


def test_a_dirty_tree_is_a_warning_and_names_the_diff(spec, at_commit):
    label = at_commit(dirty=True)
    lines = []
    run(spec, dry_run=True, echo=lines.append)
    assert lines[0].startswith("[assay-study] warning: the working tree has uncommitted changes") and label in lines[0]
    assert all(s.status == "missing" for s in states(spec))


def test_a_crossed_cells_directories_and_references_parse_as_hydra_overrides(tmp_path):
    """A crossed cell's directory is <arm>@<factor>=<level>: its '=' must reach Hydra inside a quoted value,
    in hydra.sweep.dir and in every {run:...} reference to it (a reference the spec quoted itself stays as written)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from assay.study.runner import cell_command

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.yaml").write_text(yaml.safe_dump({
        "base": ["debug=fast"], "setup": {"sft": ["trainer.max_steps=2"]},
        "cross": {"flip": {"0.4": ["noise.p=0.4", "model.init_from={setup:sft}"]}},
        "arms": {"probe": ["optim.lr=1"], "b": ["selection.dynamics_from={run:probe}"], "c": ["selection.dynamics_from='{run:probe}'"]},
        "seeds": [0, 1], "primary": "test/loss", "comparisons": [{"arm": "b", "baseline": "c"}]}, sort_keys=False))
    spec = load(tmp_path / "s")
    for arm in ("b", "c"):
        cell = Cell(arm, (("flip", "0.4"),))
        parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(cell_command(spec, cell, [0, 1])[2:])}
        assert parsed["hydra.sweep.dir"] == str((tmp_path / "s" / "runs" / f"{arm}@flip=0.4").resolve())
        assert str(parsed["selection.dynamics_from"]) == str((tmp_path / "s" / "runs" / "probe@flip=0.4").resolve()) + "/seed${seed}"
        assert parsed["model.init_from"] == str((tmp_path / "s" / "setup" / "sft").resolve())
