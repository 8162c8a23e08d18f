"""Study specs: every bad field is one line; the report's headline holds exactly the declared family,
with numbers recomputed here from runs.csv with scipy and statsmodels; missing runs are marked; runs
of different commits are refused unless allowed."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from statsmodels.stats.multitest import multipletests

from assay.errors import UserError
from assay.study import check_overrides, load, report
from assay.study.spec import Cell

C1, C2 = "c" * 40, "d" * 40
SPEC = {
    "question": "Does b lower the loss against a, at both noise levels?",
    "base": ["debug=fast"],
    "arms": {"a": ["optim.lr=1e-3"], "b": ["optim.lr=3e-3"], "c": ["optim.lr=1e-2"]},
    "cross": {"noise": {"0.0": ["noise=none"], "0.2": ["noise=none"]}},
    "seeds": [0, 1, 2, 3, 4, 5],
    "primary": "test/loss",
    "secondary": ["test/exact_match"],
    "comparisons": [{"arm": "b", "baseline": "a"}, {"arm": "c", "baseline": "a"}],
    "one_sample": [{"arm": "a", "constant": 3.0}],
}


def _write(root, spec=None, **changes):
    root.mkdir(parents=True, exist_ok=True)
    data = {**SPEC, **(spec or {}), **changes}
    (root / "study.yaml").write_text(yaml.safe_dump(data))
    return root


def _fake_run(spec, cell, seed, loss, em, commit=C1):
    d = spec.run_dir(cell, seed)
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    (d / "summary.json").write_text(json.dumps({"status": "completed", "metrics": {"test/loss": loss, "test/exact_match": em},
                                                "provenance": {"code": {"commit": commit, "dirty": False}, "versions": {"torch": "2.13.0"}}}))


@pytest.mark.parametrize("change, message", [
    ({"primary": "loss"}, "primary='loss': must be a run metric"),
    ({"comparisons": [{"arm": "b", "baseline": "z"}]}, "comparisons[0].baseline='z': is not an arm of this study"),
    ({"comparisons": [{"arm": "y", "baseline": "a"}]}, "comparisons[0].arm='y': is not an arm of this study"),
    ({"comparisons": [{"arm": "a", "baseline": "a"}]}, "compares an arm with itself"),
    ({"seeds": [0]}, "a declared comparison needs at least 2 seeds"),
    ({"seeds": [0, 0]}, "must be a list of distinct integers"),
    ({"correction": "bonferroni"}, "must be holm"),
    ({"arms": {"a": ["x={run:b}"]}, "comparisons": [], "one_sample": []}, "names no arm"),
    ({"arms": {"a": ["x={run:b}"], "b": ["y={run:a}"]}, "comparisons": [], "one_sample": []}, "form a cycle"),
    ({"arms": {"a": "optim.lr=1"}}, "must be a list of overrides"),
    ({"arm": {}}, "unknown key in study.yaml"),
    ({"one_sample": [{"arm": "a", "constant": "half"}]}, "must be a number"),
])
def test_bad_spec_is_one_line(tmp_path, change, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load(_write(tmp_path / "s", **change))


def test_an_arm_that_does_not_compose_is_named_before_any_run(tmp_path):
    spec = load(_write(tmp_path / "s", arms={"a": ["objective=no_such_loss"], "b": ["optim.lr=1"], "c": ["optim.lr=2"]}))
    with pytest.raises(UserError, match=r"arms\.a at noise=0\.0=.*does not compose"):
        check_overrides(spec)
    check_overrides(load(_write(tmp_path / "ok")))  # the good spec composes


def test_run_placeholders_and_dependency_order(tmp_path):
    spec = load(_write(tmp_path / "s", arms={"ref": ["model.init_from={run:base}"], "base": ["optim.lr=1"]}, comparisons=[], one_sample=[], cross={}))
    assert [c.arm for c in spec.cells()] == ["base", "ref"]  # the arm a {run:...} names comes first
    assert spec.overrides(Cell("ref"))[-1] == f"model.init_from={(tmp_path / 's' / 'runs' / 'base').resolve()}/seed${{seed}}"
    assert spec.overrides(Cell("ref"), 3)[-1].endswith("runs/base/seed3")


def test_a_level_of_cross_may_name_a_setup_run(tmp_path):
    # several SFT models: one setup run per level, filled in like an arm's {setup:...}
    cross = {"sft": {"s0": ["model.init_from={setup:sft0}"], "s1": ["model.init_from={setup:sft1}"]}}
    spec = load(_write(tmp_path / "s", setup={"sft0": ["seed=0"], "sft1": ["seed=1"]}, cross=cross))
    assert spec.overrides(Cell("a", (("sft", "s1"),)), 2)[1] == f"model.init_from={(tmp_path / 's' / 'setup' / 'sft1').resolve()}"
    with pytest.raises(UserError, match=re.escape("names no setup run")):
        load(_write(tmp_path / "t", setup={"sft0": ["seed=0"]}, cross=cross))
    with pytest.raises(UserError, match=re.escape("not an arm's run")):
        load(_write(tmp_path / "u", cross={"x": {"l": ["model.init_from={run:a}"]}}))


def test_report_recomputed_from_runs_csv(tmp_path):
    spec = load(_write(tmp_path / "s"))
    rng = np.random.default_rng(0)
    for cell in spec.cells():
        shift = {"a": 0.0, "b": -0.3, "c": -0.05}[cell.arm]
        for seed in spec.seeds:
            if (cell.arm, seed) == ("c", 5) and cell.level == (("noise", "0.2"),):
                continue  # one run lost: marked, and its pair dropped
            _fake_run(spec, cell, seed, 3.5 + shift + 0.1 * seed + rng.normal(0, 0.05), 0.1 * rng.random())
    out = report(spec, plots=True, command=["assay-study", "report", "s"])
    runs = pd.read_csv(tmp_path / "s" / "runs.csv")
    assert len(runs) == 3 * 2 * 6 and (runs["status"] == "missing").sum() == 1 and set(runs["commit"].dropna()) == {C1[:10]}
    text = (tmp_path / "s" / "results.md").read_text()

    # the declared family: 2 comparisons x 2 levels + 1 one-sample x 2 levels = 6, Holm over the 6
    done = runs[runs["status"] == "completed"]
    expected = []
    for arm, level in [("b", "0.0"), ("b", "0.2"), ("c", "0.0"), ("c", "0.2")]:
        x = done[(done["arm"] == arm) & (done["noise"].astype(str) == level)].set_index("seed")["test/loss"]
        y = done[(done["arm"] == "a") & (done["noise"].astype(str) == level)].set_index("seed")["test/loss"]
        shared = sorted(set(x.index) & set(y.index))
        expected.append((f"{arm}@noise={level}", f"a@noise={level}", len(shared), float((x[shared] - y[shared]).mean()), stats.ttest_rel(x[shared], y[shared]).pvalue))
    for level in ("0.0", "0.2"):
        v = done[(done["arm"] == "a") & (done["noise"].astype(str) == level)]["test/loss"]
        expected.append((f"a@noise={level}", "3 (constant)", len(v), float(v.mean() - 3.0), stats.ttest_1samp(v, 3.0).pvalue))
    holm = multipletests([e[4] for e in expected], method="holm")[1]
    headline = text.split("## Declared comparisons")[1].split("## Per arm")[0]
    for (arm, base, n, diff, p), p_holm in zip(expected, holm):
        row = next(line for line in headline.splitlines() if line.startswith(f"| {arm} | {base} | test/loss |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[3]) == n
        assert float(cells[4].split(" [")[0]) == pytest.approx(diff, rel=1e-3, abs=1e-4)
        assert float(cells[5]) == pytest.approx(p, rel=1e-3) and float(cells[6]) == pytest.approx(p_holm, rel=1e-3)
    assert "over the 6 comparisons" in headline and "test/exact_match" not in headline  # secondary: exploratory only
    assert "## Exploratory" in text and "| b@noise=0.0 | a@noise=0.0 | test/exact_match |" in text
    assert "| c@noise=0.2 | 5 of 6 (no result: seed 5) |" in text and "1 of 36 runs have no result" in text
    assert f"Provenance: commit {C1[:10]} (35 runs)" in text and "by `assay-study report s`" in text
    assert all(f.is_file() for f in out["files"]) and (tmp_path / "s" / "results_comparisons.png").stat().st_size > 1000


def test_report_refuses_runs_of_two_commits_unless_allowed(tmp_path):
    spec = load(_write(tmp_path / "s", cross={}, comparisons=[{"arm": "b", "baseline": "a"}], one_sample=[], seeds=[0, 1]))
    for cell in spec.cells():
        for seed in spec.seeds:
            _fake_run(spec, cell, seed, 1.0 + seed + (cell.arm == "b"), 0.0, commit=C2 if (cell.arm, seed) == ("b", 1) else C1)
    with pytest.raises(UserError, match="its runs come from 2 commits .*--allow-mixed-commits"):
        report(spec, plots=False)
    text = report(spec, plots=False, allow_mixed_commits=True)["text"]
    assert "**pooled across commits**" in text


def test_a_primary_metric_at_floor_everywhere_is_called_a_design_problem(tmp_path):
    spec = load(_write(tmp_path / "s", cross={}, comparisons=[{"arm": "b", "baseline": "a"}], one_sample=[], seeds=[0, 1], primary="test/exact_match", secondary=[]))
    for cell in spec.cells():
        for seed in spec.seeds:
            _fake_run(spec, cell, seed, 1.0, 0.0)
    out = report(spec, plots=False)
    assert "The primary metric is 0 in every run" in out["text"] and math.isnan(out["family"][0].p)


def test_a_declared_metric_no_run_has_is_one_line(tmp_path):
    spec = load(_write(tmp_path / "s", cross={}, comparisons=[{"arm": "b", "baseline": "a"}], one_sample=[], seeds=[0, 1], primary="test/pref_acc"))
    for cell in spec.cells():
        for seed in spec.seeds:
            _fake_run(spec, cell, seed, 1.0, 0.0)
    with pytest.raises(UserError, match="test/pref_acc.*no completed run has this metric"):
        report(spec, plots=False)
