"""assay-compare shows a selection's detection metrics without --metric."""

import json

import yaml

from assay.compare import Run, choose_metrics, compare


def _write_run(path, seed, scorer, auroc, exact):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "selection": {"name": scorer}}))
    metrics = {"test/exact_match": exact, "test/loss": 1.0, "val/loss": 1.1, "selection/is_corrupted/auroc": auroc,
               "selection/is_corrupted/precision_at_k": auroc - 0.2, "selection/is_corrupted/kept_rate": 0.1, "train/other": 3.0}
    (path / "summary.json").write_text(json.dumps({"status": "completed", "metrics": metrics}))


def test_default_metrics_include_selection_detection(tmp_path, capsys):
    for i, (scorer, auroc) in enumerate([("el2n", 0.85), ("el2n", 0.87), ("grand", 0.9), ("grand", 0.92)]):
        _write_run(tmp_path / "sweep" / str(i), i % 2, scorer, auroc, 0.4)
    result = compare([str(tmp_path / "sweep")], plots=False, out=tmp_path / "out")
    assert result["by"] == ["selection.name"]
    assert result["metrics"] == ["test/exact_match", "test/loss", "val/loss", "selection/is_corrupted/auroc",
                                 "selection/is_corrupted/kept_rate", "selection/is_corrupted/precision_at_k"]
    table = result["table"].set_index("selection.name")
    assert abs(table.loc["el2n", "selection/is_corrupted/auroc mean"] - 0.86) < 1e-9
    assert "is_corrupted" in capsys.readouterr().out  # the printed table (rich may wrap the long header)
    assert "selection/is_corrupted/auroc" in (tmp_path / "out" / "compare.md").read_text()


def test_runs_without_detection_keep_the_headline_only():
    runs = [Run("a", "local", "completed", {}, {"test/loss": 1.0, "train/x": 2.0})]
    assert choose_metrics(runs, []) == ["test/loss"]
    assert choose_metrics(runs, ["train/x"]) == ["train/x"]
