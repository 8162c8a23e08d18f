"""Selection and ordering end to end (debug=fast): detection metrics reach summary.json."""

import json

import pytest

from tests.conftest import run_in_hydra


@pytest.mark.parametrize("selection", ["el2n", "perplexity"])
def test_scorer_run_reports_detection(tmp_path, selection):
    summary = run_in_hydra(["debug=fast", "noise=corrupt", "noise.p=0.3", f"selection={selection}", "ordering=folding"], tmp_path)
    det = summary["selection"]["detection"]["is_corrupted"]
    assert 0.0 <= det["auroc"] <= 1.0 and 0.0 <= det["precision_at_k"] <= 1.0 and det["k"] > 0
    assert summary["data"]["kept_examples"] == summary["data"]["train_examples"] // 2
    assert json.loads((tmp_path / "summary.json").read_text())["selection"]["scorer"] == selection
    assert (tmp_path / "selection.json").is_file()


def test_curriculum_by_difficulty_with_anchor_quantile(tmp_path):
    summary = run_in_hydra(["debug=fast", "selection=grand", "selection.keep_rule=anchor_quantile", "selection.params=[layers.1.mlp]", "ordering=curriculum"], tmp_path)
    assert "anchor_threshold" in summary["selection"] and summary["data"]["kept_examples"] > 0


def test_warmup_then_forgetting_and_clues(tmp_path):
    """A warm-up stage records dynamics and checkpoints; later scorers read them by run directory."""
    warm = tmp_path / "warm"
    run_in_hydra(["debug=fast", "noise=corrupt", "noise.p=0.3", "trainer.max_steps=30", "data.max_train_examples=40"], warm)
    summary = run_in_hydra(["debug=fast", "noise=corrupt", "noise.p=0.3", "data.max_train_examples=40", "selection=cartography", f"selection.dynamics_from={warm}"], tmp_path / "carto")
    assert "is_corrupted" in summary["selection"]["detection"]
    summary = run_in_hydra(["debug=fast", "noise=corrupt", "noise.p=0.3", "data.max_train_examples=40", "selection=clues", f"selection.dynamics_from={warm}", "selection.params=[layers.1.mlp]"], tmp_path / "clues")
    assert "is_corrupted" in summary["selection"]["detection"] and "anchor_threshold" in summary["selection"]
