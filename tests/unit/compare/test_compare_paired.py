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
    # the rows are the family on the primary metric: Holm over the one row with a p-value leaves it as it is
    assert row["test/pref_acc p adjusted"] == pytest.approx(row["test/pref_acc p"]) and math.isnan(other["test/pref_acc p adjusted"])
    assert row["test/pref_acc ci low"] <= 0.2 <= row["test/pref_acc ci high"] and row["test/pref_acc mde"] > 0.2
    text = paired_markdown(table.reset_index(), ["objective.method", "noise.p"], ["test/pref_acc"], "objective=dpo")
    assert f"| dr | 0.2 | +0.2000 [{row['test/pref_acc ci low']:+.4f}, {row['test/pref_acc ci high']:+.4f}] | 0.0742 | 0.0742 | " in text
    assert "| dr | 0.4 | -0.1000 [-0.1000, -0.1000] | — | — | — | 2 |" in text and "fewer than 5 paired seeds" in text


def test_holm_over_the_primary_rows_and_the_other_metrics_exploratory():
    from statsmodels.stats.multitest import multipletests

    runs = []
    for seed, (base, a, b) in enumerate([(0.5, 0.62, 0.50), (0.4, 0.55, 0.43), (0.6, 0.69, 0.58), (0.45, 0.61, 0.49)]):
        for method, acc in (("dpo", base), ("dr", a), ("ipo", b)):
            runs.append(Run(f"{method}{seed}", "local", "completed", {"seed": seed, "objective.method": method}, {"test/pref_acc": acc, "test/loss": 1 - acc}))
    table = paired(runs, ["objective.method"], ["test/pref_acc", "test/loss"], "dpo").set_index("objective.method")
    holm = multipletests(list(table["test/pref_acc p"]), method="holm")[1]
    assert list(table["test/pref_acc p adjusted"]) == pytest.approx(list(holm))
    assert "test/loss p adjusted" not in table
    text = paired_markdown(table.reset_index(), ["objective.method"], ["test/pref_acc", "test/loss"], "dpo")
    assert "### Exploratory (not declared; p not corrected)" in text and "| objective.method | Δ test/loss |" in text
    with pytest.raises(UserError, match="--primary='test/kl'"):
        paired(runs, ["objective.method"], ["test/pref_acc"], "dpo", primary="test/kl")


def test_a_baseline_no_run_has_is_one_line():
    runs = [_run("dpo", 0.2, 0, 0.5), _run("dr", 0.2, 0, 0.6)]
    with pytest.raises(UserError, match="no completed run has objective.method=ipo"):
        paired(runs, ["objective.method", "noise.p"], ["test/pref_acc"], "objective=ipo")
    with pytest.raises(UserError, match="not a --by key"):
        paired(runs, ["objective.method", "noise.p"], ["test/pref_acc"], "optim.lr=0.1")
    with pytest.raises(UserError, match="write key=value"):
        paired(runs, ["objective.method", "noise.p"], ["test/pref_acc"], "dpo")


def test_vs_constant_is_the_one_sample_test_per_group_corrected_over_groups():
    from scipy.stats import ttest_1samp
    from statsmodels.stats.multitest import multipletests

    from assay.compare.paired import against_constant, constant_markdown

    aurocs = {"clues": [0.546, 0.49, 0.61, 0.52], "el2n": [0.70, 0.74, 0.69, 0.77]}
    runs = [Run(f"{m}{s}", "local", "completed", {"seed": s, "selection.name": m}, {"selection/is_corrupted/auroc": v})
            for m, vs in aurocs.items() for s, v in enumerate(vs)]
    table = against_constant(runs, ["selection.name"], "selection/is_corrupted/auroc=0.5").set_index("selection.name")
    p = [ttest_1samp(aurocs[m], 0.5).pvalue for m in ("clues", "el2n")]
    assert list(table["p"]) == pytest.approx(p) and list(table["p adjusted"]) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert table.loc["clues", "mean - constant"] == pytest.approx(sum(aurocs["clues"]) / 4 - 0.5)
    assert "| clues | +0.0415 [" in constant_markdown(table.reset_index(), ["selection.name"])
    for bad in ("auroc", "selection/is_corrupted/auroc=half"):
        with pytest.raises(UserError, match="write METRIC=VALUE"):
            against_constant(runs, ["selection.name"], bad)
    with pytest.raises(UserError, match="no completed run has the metric test/x"):
        against_constant(runs, ["selection.name"], "test/x=0.5")


def test_bh_is_selectable_instead_of_holm(tmp_path):
    import json

    import yaml
    from statsmodels.stats.multitest import multipletests

    from assay.compare import compare

    runs = []
    for seed, (base, a, b) in enumerate([(0.5, 0.62, 0.50), (0.4, 0.55, 0.43), (0.6, 0.69, 0.58), (0.45, 0.61, 0.49)]):
        for method, acc in (("dpo", base), ("dr", a), ("ipo", b)):
            d = tmp_path / f"{method}{seed}"
            d.mkdir()
            (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "objective": {"method": method}}))
            (d / "summary.json").write_text(json.dumps({"status": "completed", "metrics": {"test/pref_acc": acc}}))
            runs.append(str(d))
    compare(runs, by=["objective.method"], metrics=["test/pref_acc"], out=tmp_path / "out", quiet=True, plots=False,
            paired_with="objective.method=dpo", correction="bh")
    import pandas as pd

    table = pd.read_csv(tmp_path / "out" / "paired.csv")
    assert list(table["test/pref_acc p adjusted"]) == pytest.approx(list(multipletests(list(table["test/pref_acc p"]), method="fdr_bh")[1]))
    assert "p (BH)" in (tmp_path / "out" / "paired.md").read_text()
