"""Pure pieces of assay-compare and the SLURM preflight (no training, no cluster)."""

import math

import pytest

from assay.compare import Run, aggregate, check_keys, flatten, fmt, varying_keys
from assay.errors import UserError
from assay.run.cluster import _minutes


def _run(name, seed, lr, loss, status="completed"):
    return Run(name, "local", status, {"seed": seed, "data.seed": seed, "optim.lr": lr, "objective.name": "sft", "paths.output_dir": name},
               {"test/loss": loss} if status == "completed" else {})


def test_flatten_gives_dotted_keys():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


def test_seeds_are_aggregated_with_sample_std_and_failures_counted():
    runs = [_run("a", 0, 0.1, 1.0), _run("b", 1, 0.1, 3.0), _run("c", 0, 0.2, 5.0), _run("d", 1, 0.2, 0, status="failed")]
    assert varying_keys(runs) == ["optim.lr"]  # seeds and output dirs are not factors
    table = aggregate(runs, ["optim.lr"], ["test/loss"]).set_index("optim.lr")
    assert table.loc["0.1", "test/loss mean"] == 2.0 and table.loc["0.1", "test/loss std"] == pytest.approx(math.sqrt(2))
    assert table.loc["0.1", "n"] == 2 and table.loc["0.2", "n"] == 1 and table.loc["0.2", "failed"] == 1
    assert fmt(2.0, math.sqrt(2), 2) == "2.0000 ± 1.4142" and fmt(5.0, 0.0, 1) == "5.0000" and fmt(math.nan, math.nan, 0) == "—"


def test_group_name_stands_for_its_option_and_unknown_keys_fail():
    runs = [_run("a", 0, 0.1, 1.0)]
    assert check_keys(runs, ["objective", "optim.lr"]) == ["objective.name", "optim.lr"]
    with pytest.raises(UserError, match="did you mean"):
        check_keys(runs, ["optim.lrr"])


@pytest.mark.parametrize("limit, minutes", [("infinite", None), ("30:00", 30), ("2:00:00", 120), ("1-00:00:00", 1440), ("1-02:03:04", 1564)])
def test_sinfo_time_limits(limit, minutes):
    assert _minutes(limit) == minutes


def test_missing_sweep_jobs_group_with_the_completed_ones(tmp_path):
    """A job that never ran is known only by its overrides (objective=dpo); it must land in the same
    group as completed runs, whose config says objective.name=dpo."""
    import json

    import yaml

    from assay.compare import read_sweep

    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    yaml.safe_dump({"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
                              "overrides": {"task": ["objective=sft,dpo", "data.format=preference"]}}}, open(sweep / "multirun.yaml", "w"))
    yaml.safe_dump({"objective": {"name": "sft"}, "seed": 0}, open(sweep / "0" / "config.yaml", "w"))
    (sweep / "0" / "summary.json").write_text(json.dumps({"status": "completed", "metrics": {"test/loss": 1.0}}))
    runs = read_sweep(sweep)
    missing = [r for r in runs if r.status == "missing"]
    assert len(missing) == 1 and missing[0].config["objective.name"] == "dpo"
    table = aggregate(runs, check_keys(runs, ["objective"]), ["test/loss"]).set_index("objective.name")
    assert table.loc["dpo", "failed"] == 1 and table.loc["sft", "n"] == 1
