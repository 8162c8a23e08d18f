"""assay.compare.stats: paired and one-sample comparisons, the family corrections, the MDE and the
report table, checked against hand-computed values and against scipy/statsmodels called directly."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from assay.compare.stats import Comparison, adjust, markdown, one_sample, paired_comparison, to_frame


def _paired(diffs, **kw):
    """An arm and a baseline on seeds 0..n-1 whose per-seed differences are ``diffs``."""
    base = {s: 10.0 + 0.5 * s for s in range(len(diffs))}
    arm = {s: base[s] + d for s, d in enumerate(diffs)}
    return paired_comparison(arm, base, arm="arm", baseline="base", metric="loss", **kw)


def _with_p(*ps):
    return [Comparison(arm=f"a{i}", baseline="b", metric="m", n=5, mean_diff=0.0, sd_diff=1.0, ci_low=-1.0, ci_high=1.0, p=p)
            for i, p in enumerate(ps)]


def test_paired_t_hand_computed():
    c = _paired([1.0, 2.0, 3.0])
    # differences 1, 2, 3: mean 2, sample sd 1, t = 2 / (1 / sqrt 3) on 2 degrees of freedom
    t = 2.0 / (1.0 / math.sqrt(3.0))
    assert c.n == 3
    assert c.mean_diff == pytest.approx(2.0)
    assert c.sd_diff == pytest.approx(1.0)
    assert c.p == pytest.approx(2 * stats.t.sf(t, df=2), rel=1e-10)
    assert c.p == pytest.approx(0.07418, abs=1e-5)
    assert math.isnan(c.p_adjusted)
    assert (c.arm, c.baseline, c.metric, c.test) == ("arm", "base", "loss", "paired t")


def test_pairing_uses_shared_seeds_only():
    arm = {0: 3.0, 1: 5.0, 2: 7.0, 9: 1000.0}
    base = {0: 2.0, 1: 3.0, 2: 4.0, 7: -1000.0}
    c = paired_comparison(arm, base, arm="a", baseline="b", metric="m")
    only_shared = paired_comparison({s: arm[s] for s in (2, 0, 1)}, {s: base[s] for s in (1, 2, 0)}, arm="a", baseline="b", metric="m")
    assert c.n == 3
    assert c.mean_diff == pytest.approx(2.0)
    assert c.p == pytest.approx(stats.ttest_rel([3.0, 5.0, 7.0], [2.0, 3.0, 4.0]).pvalue)
    assert (c.mean_diff, c.sd_diff, c.p, c.ci_low, c.ci_high, c.mde) == (
        only_shared.mean_diff, only_shared.sd_diff, only_shared.p, only_shared.ci_low, only_shared.ci_high, only_shared.mde)


def test_wilcoxon_option():
    diffs = [0.3, -0.1, 0.5, 0.2, 0.4, 0.25, 0.35]
    c = _paired(diffs, test="wilcoxon")
    assert c.test == "wilcoxon"
    assert c.p == pytest.approx(stats.wilcoxon(diffs).pvalue, rel=1e-6)
    with pytest.raises(ValueError, match="wilcoxon"):
        _paired(diffs, test="mannwhitney")


def test_holm_hand_computed_and_against_statsmodels():
    out = adjust(_with_p(0.01, 0.04, 0.03), method="holm")
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, 1 x 0.04, kept monotone: 0.03, 0.06, 0.06
    assert [c.p_adjusted for c in out] == pytest.approx([0.03, 0.06, 0.06])
    ps = [0.001, 0.2, 0.049, 0.012, 0.5, 0.03]
    out = adjust(_with_p(*ps), method="holm")
    assert [c.p_adjusted for c in out] == pytest.approx(list(multipletests(ps, method="holm")[1]))


def test_bh_hand_computed_and_against_statsmodels():
    out = adjust(_with_p(0.01, 0.04, 0.03), method="bh")
    # sorted 0.01, 0.03, 0.04 -> 0.01 x 3/1, 0.03 x 3/2, 0.04 x 3/3 = 0.03, 0.045, 0.04, step-up min: 0.03, 0.04, 0.04
    assert [c.p_adjusted for c in out] == pytest.approx([0.03, 0.04, 0.04])
    ps = [0.001, 0.2, 0.049, 0.012, 0.5, 0.03]
    out = adjust(_with_p(*ps), method="bh")
    assert [c.p_adjusted for c in out] == pytest.approx(list(multipletests(ps, method="fdr_bh")[1]))


def test_adjust_leaves_inputs_alone_and_keeps_order():
    family = _with_p(0.04, 0.01)
    out = adjust(family)
    assert all(math.isnan(c.p_adjusted) for c in family)
    assert [c.arm for c in out] == ["a0", "a1"]
    assert [c.p_adjusted for c in out] == pytest.approx([0.04, 0.02])


def test_nan_p_is_outside_the_family():
    out = adjust(_with_p(0.01, math.nan, 0.04, 0.03), method="holm")
    adjusted = [c.p_adjusted for c in out]
    assert math.isnan(adjusted[1])
    # a family of 3, not 4: the same values as without the untested comparison
    assert [adjusted[i] for i in (0, 2, 3)] == pytest.approx([0.03, 0.06, 0.06])
    assert all(math.isnan(c.p_adjusted) for c in adjust(_with_p(math.nan, math.nan)))


@pytest.mark.parametrize("method", ["bonferroni", "fdr_bh", "Holm", ""])
def test_bad_correction_method_raises(method):
    with pytest.raises(ValueError, match=r"'bh'.*'holm'"):
        adjust(_with_p(0.01, 0.02), method=method)
    with pytest.raises(ValueError, match="holm"):
        markdown(_with_p(0.01), correction=method)


def test_bootstrap_ci_contains_mean_and_is_reproducible():
    diffs = list(np.random.default_rng(3).normal(0.2, 0.1, size=8))
    a, b, c = _paired(diffs), _paired(diffs), _paired(diffs, seed=1)
    assert a.ci_low < a.mean_diff < a.ci_high
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    # a 95 % interval of a mean over 8 values: inside the range of the values, wider than a tenth of their sd
    assert min(diffs) < a.ci_low and a.ci_high < max(diffs)
    assert a.ci_high - a.ci_low > 0.1 * np.std(diffs, ddof=1)


def test_one_sample_against_chance():
    auroc = [0.546, 0.531, 0.560, 0.552, 0.539]
    c = one_sample(auroc, constant=0.5, metric="auroc", label="probe")
    # mean 0.5456; deviations 0.0004, -0.0146, 0.0144, 0.0064, -0.0066: sum of squares 5.052e-4, sd sqrt(5.052e-4 / 4)
    sd = math.sqrt(5.052e-4 / 4)
    t = 0.0456 / (sd / math.sqrt(5))
    assert c.n == 5
    assert c.mean_diff == pytest.approx(0.0456)
    assert c.sd_diff == pytest.approx(sd)
    assert c.p == pytest.approx(2 * stats.t.sf(t, df=4), rel=1e-8)
    assert c.p == pytest.approx(stats.ttest_1samp(auroc, 0.5).pvalue, rel=1e-10)
    assert c.baseline == "0.5 (constant)"
    assert (c.arm, c.metric, c.test) == ("probe", "auroc", "one-sample t")
    assert c.ci_low < 0.0456 < c.ci_high and c.ci_low > 0
    assert c.mde == pytest.approx(TTestPower().solve_power(effect_size=None, nobs=5, alpha=0.05, power=0.8, alternative="two-sided") * sd)
    assert "n < 5" not in c.note


def test_mde_is_statsmodels_times_sd_and_shrinks_with_n():
    mdes = []
    for reps in (1, 2, 3, 6):
        c = _paired([1.0, 2.0, 3.0] * reps)
        d = TTestPower().solve_power(effect_size=None, nobs=3 * reps, alpha=0.05, power=0.8, alternative="two-sided")
        assert c.mde == pytest.approx(d * c.sd_diff, rel=1e-8)
        mdes.append(c.mde)
    assert mdes == sorted(mdes, reverse=True) and len(set(mdes)) == len(mdes)
    # with n = 3 a true effect has to be about 3.3 sd of the differences to be found 4 times in 5
    assert mdes[0] == pytest.approx(3.264, abs=1e-3)
    strict = _paired([1.0, 2.0, 3.0], alpha=0.01, power=0.9)
    assert strict.mde > mdes[0]


def test_few_seeds_note():
    assert "n < 5" in _paired([1.0, 2.0, 3.0, 2.5]).note
    assert "n < 5" not in _paired([1.0, 2.0, 3.0, 2.5, 1.5]).note
    assert "n < 5" in one_sample([0.6, 0.7], constant=0.5, metric="auroc", label="x").note


def test_equal_nonzero_differences_give_nan_p_with_note():
    c = _paired([0.5, 0.5, 0.5, 0.5, 0.5])
    assert math.isnan(c.p)
    assert math.isnan(c.mde)
    assert c.sd_diff == 0.0
    assert c.mean_diff == pytest.approx(0.5)
    assert "zero variance" in c.note and "0.5" in c.note
    assert (c.ci_low, c.ci_high) == pytest.approx((0.5, 0.5))
    # differences equal up to the rounding of the subtraction are equal too (not a t of 1e15)
    r = paired_comparison({0: 0.3, 1: 0.5, 2: 0.7}, {0: 0.2, 1: 0.4, 2: 0.6}, arm="a", baseline="b", metric="m")
    assert math.isnan(r.p) and "zero variance" in r.note


def test_zero_differences_give_nan_p_with_note():
    c = _paired([0.0, 0.0, 0.0, 0.0, 0.0])
    assert math.isnan(c.p) and math.isnan(c.mde)
    assert "every difference is 0" in c.note
    w = _paired([0.0] * 6, test="wilcoxon")
    assert math.isnan(w.p)


def test_fewer_than_two_pairs():
    one = paired_comparison({0: 2.0, 1: 5.0}, {0: 1.0}, arm="a", baseline="b", metric="m")
    assert one.n == 1 and one.mean_diff == 1.0
    assert all(math.isnan(x) for x in (one.sd_diff, one.ci_low, one.ci_high, one.p, one.mde))
    none = paired_comparison({0: 2.0}, {1: 1.0}, arm="a", baseline="b", metric="m")
    assert none.n == 0 and math.isnan(none.mean_diff) and math.isnan(none.p)


def test_nan_values_are_left_out_with_a_note():
    c = paired_comparison({0: 2.0, 1: 4.0, 2: 6.0, 3: math.nan}, {0: 1.0, 1: 2.0, 2: 3.0, 3: 1.0}, arm="a", baseline="b", metric="m")
    assert c.n == 3 and c.p == pytest.approx(_paired([1.0, 2.0, 3.0]).p)
    assert "nan" in c.note


def test_to_frame_has_one_row_per_comparison_and_the_fields_as_columns():
    comps = [_paired([1.0, 2.0, 3.0]), one_sample([0.55, 0.6, 0.52], constant=0.5, metric="auroc", label="probe")]
    frame = to_frame(adjust(comps))
    assert list(frame.columns) == [f.name for f in fields(Comparison)]
    assert len(frame) == 2
    assert frame.loc[1, "baseline"] == "0.5 (constant)"
    assert frame.loc[0, "p"] == pytest.approx(comps[0].p)
    assert list(to_frame([]).columns) == [f.name for f in fields(Comparison)]


def test_markdown_table():
    comps = [_paired([1.0, 2.0, 3.0]), _paired([0.5] * 5), one_sample([0.546, 0.531, 0.560, 0.552, 0.539], constant=0.5, metric="auroc", label="probe")]
    text = markdown(comps)
    lines = text.splitlines()
    assert lines[0] == "| arm | baseline | metric | n | Δ mean [95 % CI] | p | p (Holm) | MDE (80 % power) | note |"
    rows = [line for line in lines[2:] if line.startswith("|")]
    assert len(rows) == 3
    assert all(row.count("|") == 10 for row in rows)
    holm = multipletests([comps[0].p, comps[2].p], method="holm")[1]
    assert f"| {comps[0].p:.4g} | {holm[0]:.4g} |" in rows[0]
    assert "| +2 [" in rows[0]
    assert "| — | — | — |" in rows[1]
    footer = lines[-1]
    assert "paired" in footer and "two-sided" in footer and "Holm" in footer and "2 comparisons" in footer
    bh = markdown(comps, correction="bh", digits=3)
    assert "| p (BH) |" in bh and "Benjamini-Hochberg" in bh
    assert f"| {comps[0].p:.3g} |" in bh
