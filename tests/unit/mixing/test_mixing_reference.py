"""DoReMi's reference run is checked before anything is computed; assay-compare expands curve wildcards."""

import json

import pandas as pd
import pytest

from assay.compare import Run, expand_curves
from assay.errors import UserError
from assay.mixing.doremi_resample import check_reference_run


def fake_run(path, metrics, domains):
    (path / "model").mkdir(parents=True)
    (path / "model" / "config.json").write_text("{}")
    (path / "tokenizer").mkdir()
    (path / "summary.json").write_text(json.dumps({"metrics": metrics, "data": {"source_counts": {d: 10 for d in domains}}}))
    return path


def test_reference_with_per_domain_losses_on_the_same_domains(tmp_path):
    run = fake_run(tmp_path / "ref", {"val/loss": 1.0, "val/loss/a": 1.0, "val/loss/b": 2.0}, ["a", "b"])
    assert check_reference_run(str(run), ["a", "b"]) == run


def test_reference_without_per_domain_losses(tmp_path):
    run = fake_run(tmp_path / "ref", {"val/loss": 1.0}, ["a", "b"])
    with pytest.raises(UserError, match=r"^mixture.reference=.*reports no per-domain losses"):
        check_reference_run(str(run), ["a", "b"])


def test_reference_on_other_domains(tmp_path):
    run = fake_run(tmp_path / "ref", {"val/loss/a": 1.0, "val/loss/c": 1.0}, ["a", "c"])
    with pytest.raises(UserError, match=r"was trained on domains \['a', 'c'\], this run has \['a', 'b'\]"):
        check_reference_run(str(run), ["a", "b"])


def test_reference_that_is_not_a_finished_run(tmp_path):
    with pytest.raises(UserError, match="must be a finished assay run directory"):
        check_reference_run(str(tmp_path), ["a"])


def test_curve_wildcards_expand_to_the_columns_of_the_runs():
    h = pd.DataFrame({"step": [1], "mixing/weight/b": [0.5], "mixing/weight/a": [0.5], "train/loss": [1.0]})
    runs = [Run("r", "local", "completed", {}, history=h)]
    assert expand_curves(runs, ["mixing/weight/*", "train/loss"]) == ["mixing/weight/a", "mixing/weight/b", "train/loss"]
