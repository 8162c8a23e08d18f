"""assay-compare --paired-with: each group minus its baseline on the same seed, with the paired
t-test, checked against numbers worked out by hand."""

import math

import pytest

from assay.compare import Run
from assay.compare.paired import paired, paired_markdown
from assay.errors import UserError


def _run(objective, p, seed, acc):
    return Run(f"{objective}-{p}-{seed}", "local", "completed", {"seed": seed, "objective.method": objective, "noise.p": p}, {"test/pref_acc": acc})


def test_each_group_against_its_baseline_at_the_same_other_values():
    runs = [
        # at p = 0.2: dr minus dpo per seed = +0.10, +0.20, +0.30
        _run("dpo", 0.2, 0, 0.50), _run("dpo", 0.2, 1, 0.40), _run("dpo", 0.2, 2, 0.60),
        _run("dr", 0.2, 0, 0.60), _run("dr", 0.2, 1, 0.60), _run("dr", 0.2, 2, 0.90),
        # at p = 0.4 the baseline is DPO at 0.4, not at 0.2: differences -0.1, -0.1 (zero spread); seed 2 has no pair
        _run("dpo", 0.4, 0, 0.30), _run("dpo", 0.4, 1, 0.35),
        _run("dr", 0.4, 0, 0.20), _run("dr", 0.4, 1, 0.25), _run("dr", 0.4, 2, 0.90),
    ]
    table = paired(runs, ["objective.method", "noise.p"], ["test/pref_acc"], "objective=dpo").set_index(["objective.method", "noise.p"])
    assert list(table.index) == [("dr", "0.2"), ("dr", "0.4")]  # the baseline groups are not rows
    row = table.loc[("dr", "0.2")]
    assert row["test/pref_acc delta"] == pytest.approx(0.2)
    assert row["test/pref_acc delta std"] == pytest.approx(0.1)  # sample std of 0.1, 0.2, 0.3
    # t = mean / (sd / sqrt(n)) = 0.2 / (0.1 / sqrt(3)) = 3.4641 with 2 degrees of freedom;
    # two-sided p = 1 - t / sqrt(t^2 + 2) for 2 degrees of freedom = 0.07418
    t = 0.2 / (0.1 / math.sqrt(3))
    assert row["test/pref_acc p"] == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-6)
    assert row["test/pref_acc pairs"] == 3
    other = table.loc[("dr", "0.4")]
    assert other["test/pref_acc delta"] == pytest.approx(-0.1) and other["test/pref_acc pairs"] == 2
    assert math.isnan(other["test/pref_acc p"])  # identical differences: no test
    text = paired_markdown(table.reset_index(), ["objective.method", "noise.p"], ["test/pref_acc"], "objective=dpo")
    assert "| dr | 0.2 | +0.2000 ± 0.1000 (p = 0.074, n = 3) |" in text and "| dr | 0.4 | -0.1000 (n = 2) |" in text


def test_a_baseline_no_run_has_is_one_line():
    runs = [_run("dpo", 0.2, 0, 0.5), _run("dr", 0.2, 0, 0.6)]
    with pytest.raises(UserError, match="no completed run has objective.method=ipo"):
        paired(runs, ["objective.method", "noise.p"], ["test/pref_acc"], "objective=ipo")
    with pytest.raises(UserError, match="not a --by key"):
        paired(runs, ["objective.method", "noise.p"], ["test/pref_acc"], "optim.lr=0.1")
    with pytest.raises(UserError, match="write key=value"):
        paired(runs, ["objective.method", "noise.p"], ["test/pref_acc"], "dpo")
