"""Statistics for study reports and ``assay-compare``: paired comparisons over seeds, a correction
over a declared family of comparisons, and the minimum detectable effect of each comparison.

Why paired tests over seeds: a seed fixes the initialisation, the data order and every noise draw,
so two arms run on the same seed share most of their run-to-run variation. The difference on one
seed therefore has a much smaller spread than either arm on its own, and testing the per-seed
differences (paired t-test, or the signed-rank test) spends the few seeds there are on the effect,
not on the seed noise. Seeds that only one arm has carry no paired information and are left out.

Why a declared family with Holm: a study makes several claims at once (each arm against the
baseline, on several metrics). Each p-value at 0.05 alone lets one claim in twenty through by
chance; over a family of claims the chance that at least one false claim gets through (the
family-wise error) grows with the family. Holm's step-down procedure bounds that family-wise error
at alpha over all declared comparisons, under any dependence between them, and is uniformly more
powerful than Bonferroni. The family is the set of comparisons declared before the runs, all of
them, not the ones that turned out interesting. Benjamini-Hochberg (the false-discovery rate) is
available where a screen over many comparisons is the point, not a few confirmatory claims.

Why an MDE is reported: with 3-6 seeds the paired t-test has only 2-5 degrees of freedom, and many
true effects are far too small for it to detect. The minimum detectable effect is the smallest true
mean difference that a two-sided paired t-test at alpha detects with the stated power at this n,
given the observed spread of the paired differences. A non-significant result whose MDE is larger
than any effect that would matter says "not measurable with these seeds", not "no effect".

All p-values, intervals, corrections and power calculations come from scipy.stats and statsmodels.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

TESTS = ("t", "wilcoxon")
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh"}
CORRECTION_LABEL = {"holm": "Holm", "bh": "BH"}
CONFIDENCE = 0.95
N_RESAMPLES = 10_000
FEW_SEEDS = 5
# Paired differences that agree to this fraction of the size of the values compared are equal: the
# rest is floating-point rounding of the subtraction, not seed-to-seed variation.
RELATIVE_TOLERANCE = 1e-12


@dataclass
class Comparison:
    """One claim: ``arm`` against ``baseline`` on ``metric``, over ``n`` paired seeds (or ``n`` values
    against a constant). ``mean_diff``, ``ci_low``/``ci_high`` and ``mde`` are in the metric's units;
    ``p`` is two-sided; ``p_adjusted`` is the family-corrected p that ``adjust`` fills in."""

    arm: str
    baseline: str
    metric: str
    n: int
    mean_diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    p: float
    p_adjusted: float = math.nan
    mde: float = math.nan
    note: str = ""
    # which test gave p: "paired t", "wilcoxon" (signed-rank on the paired differences) or "one-sample t"
    test: str = "paired t"


def _bootstrap_ci(diffs: np.ndarray, seed: int) -> tuple[float, float, str]:
    """95 % bootstrap CI of the mean difference: BCa (bias-corrected and accelerated), or the
    percentile interval where BCa is undefined (all differences equal: the jackknife acceleration is
    0/0)."""
    seeding = {"rng": seed} if "rng" in inspect.signature(stats.bootstrap).parameters else {"random_state": seed}
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            ci = stats.bootstrap((diffs,), np.mean, confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES, method=method, **seeding).confidence_interval
        low, high = float(ci.low), float(ci.high)
        if not (math.isnan(low) or math.isnan(high)):
            return low, high, method
    return math.nan, math.nan, "percentile"


def _mde(n: int, sd: float, alpha: float, power: float) -> float:
    """Smallest true mean difference a two-sided one-sample/paired t-test at ``alpha`` detects with
    probability ``power`` at ``n``: the standardised effect d that statsmodels solves for, times the
    sd of the differences."""
    if n < 2 or not sd > 0:
        return math.nan
    d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided")
    return float(d) * sd


def _sorted_seeds(seeds: set) -> list:
    try:
        return sorted(seeds)
    except TypeError:  # seeds of mixed types
        return sorted(seeds, key=str)


def _summarise(diffs: np.ndarray, scale: float, test_fn, *, alpha: float, power: float, seed: int, notes: list[str]) -> dict:
    """The fields shared by paired and one-sample comparisons, from the differences (against the
    baseline seed by seed, or against the constant). ``test_fn`` gives the two-sided p-value."""
    n = len(diffs)
    if n == 0:
        notes.append("no values to compare")
        return dict(n=0, mean_diff=math.nan, sd_diff=math.nan, ci_low=math.nan, ci_high=math.nan, p=math.nan, mde=math.nan)
    mean = float(np.mean(diffs))
    if n < 2:
        notes.append("n < 2: no spread, so no test, interval or MDE")
        return dict(n=n, mean_diff=mean, sd_diff=math.nan, ci_low=math.nan, ci_high=math.nan, p=math.nan, mde=math.nan)
    if n < FEW_SEEDS:
        notes.append(f"n < {FEW_SEEDS}: the test has little power and the bootstrap CI is too narrow (few distinct resamples)")
    tolerance = RELATIVE_TOLERANCE * scale
    constant = float(np.ptp(diffs)) <= tolerance
    sd = 0.0 if constant else float(np.std(diffs, ddof=1))
    low, high, method = _bootstrap_ci(diffs, seed)
    if method != "BCa" and not constant:
        notes.append("CI: percentile bootstrap (BCa undefined)")
    if constant and abs(mean) <= tolerance:
        p = math.nan
        notes.append("every difference is 0: zero variance, so p is undefined (nan)")
    elif constant:
        p = math.nan
        notes.append(f"every difference equals {mean:g}: zero variance, so p is undefined (nan) although the sign is consistent; "
                     "the seeds give no estimate of the uncertainty")
    else:
        p = float(test_fn(diffs))
    return dict(n=n, mean_diff=mean, sd_diff=sd, ci_low=low, ci_high=high, p=p, mde=_mde(n, sd, alpha, power))


def _finite_pairs(pairs: list[tuple], notes: list[str]) -> list[tuple]:
    kept = [pr for pr in pairs if all(math.isfinite(v) for v in pr[1:])]
    if len(kept) < len(pairs):
        notes.append(f"{len(pairs) - len(kept)} seed(s) with a nan/inf value left out")
    return kept


def paired_comparison(arm_values: Mapping[Hashable, float], baseline_values: Mapping[Hashable, float], *, arm: str, baseline: str,
                      metric: str, test: str = "t", alpha: float = 0.05, power: float = 0.8, seed: int = 0) -> Comparison:
    """``arm`` against ``baseline`` on ``metric``, paired by seed (the keys of the two mappings; only
    seeds both have count). ``test="t"``: two-sided paired t-test; ``test="wilcoxon"``: two-sided
    signed-rank test on the paired differences (it cannot reach p < 0.05 below 6 pairs: its smallest
    two-sided p is 2 / 2^n). The MDE is the paired t-test's either way."""
    if test not in TESTS:
        raise ValueError(f"test must be one of {list(TESTS)}, not {test!r}")
    notes: list[str] = []
    shared = _sorted_seeds(set(arm_values) & set(baseline_values))
    pairs = _finite_pairs([(s, float(arm_values[s]), float(baseline_values[s])) for s in shared], notes)
    a = np.array([pr[1] for pr in pairs], dtype=float)
    b = np.array([pr[2] for pr in pairs], dtype=float)
    diffs = a - b
    scale = float(np.max(np.abs(np.concatenate([a, b])))) if len(pairs) else 0.0

    def p_value(_: np.ndarray) -> float:
        if test == "wilcoxon":
            return stats.wilcoxon(a, b, alternative="two-sided").pvalue
        return stats.ttest_rel(a, b, alternative="two-sided").pvalue

    if test == "wilcoxon" and 1 < len(pairs) < 6:
        notes.append(f"signed-rank test with n = {len(pairs)}: its smallest possible two-sided p is {2 / 2 ** len(pairs):g}")
    summary = _summarise(diffs, scale, p_value, alpha=alpha, power=power, seed=seed, notes=notes)
    return Comparison(arm=arm, baseline=baseline, metric=metric, **summary, note="; ".join(notes),
                      test="wilcoxon" if test == "wilcoxon" else "paired t")


def one_sample(values: Sequence[float], *, constant: float, metric: str, label: str, alpha: float = 0.05, power: float = 0.8,
               seed: int = 0) -> Comparison:
    """``values`` (one per seed) against a fixed ``constant`` (e.g. AUROC against chance, 0.5): the
    two-sided one-sample t-test, the bootstrap CI of the mean of (value − constant), and the MDE of
    that test."""
    notes: list[str] = []
    kept = _finite_pairs([(i, float(v)) for i, v in enumerate(values)], notes)
    x = np.array([v for _, v in kept], dtype=float)
    diffs = x - constant
    scale = max(float(np.max(np.abs(x))) if len(x) else 0.0, abs(constant))
    summary = _summarise(diffs, scale, lambda _: stats.ttest_1samp(x, constant, alternative="two-sided").pvalue,
                         alpha=alpha, power=power, seed=seed, notes=notes)
    return Comparison(arm=label, baseline=f"{constant:g} (constant)", metric=metric, **summary, note="; ".join(notes), test="one-sample t")


def _correction(method: str) -> str:
    if method not in CORRECTIONS:
        raise ValueError(f"correction method must be one of {sorted(CORRECTIONS)} (Holm's family-wise error, "
                         f"Benjamini-Hochberg's false-discovery rate), not {method!r}")
    return CORRECTIONS[method]


def adjust(comparisons: Sequence[Comparison], method: str = "holm") -> list[Comparison]:
    """The comparisons (new objects, same order) with ``p_adjusted`` corrected over the family they
    form: Holm (``"holm"``, family-wise error) or Benjamini-Hochberg (``"bh"``, false-discovery
    rate). A comparison without a p-value (nan) has no test to correct; it keeps a nan
    ``p_adjusted`` and does not count in the family size."""
    sm_method = _correction(method)
    tested = [i for i, c in enumerate(comparisons) if not math.isnan(c.p)]
    adjusted = [math.nan] * len(comparisons)
    if tested:
        _, p_adj, _, _ = multipletests([comparisons[i].p for i in tested], method=sm_method)
        for i, p in zip(tested, p_adj):
            adjusted[i] = float(p)
    return [replace(c, p_adjusted=p) for c, p in zip(comparisons, adjusted)]


def to_frame(comparisons: Sequence[Comparison]) -> pd.DataFrame:
    """One row per comparison, one column per field of ``Comparison``."""
    columns = [f.name for f in fields(Comparison)]
    return pd.DataFrame([{k: getattr(c, k) for k in columns} for c in comparisons], columns=columns)


def _num(x: float, digits: int, sign: bool = False) -> str:
    if x is None or math.isnan(x):
        return "—"
    return f"{x:+.{digits}g}" if sign else f"{x:.{digits}g}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


TEST_TEXT = {
    "paired t": "the two-sided paired t-test over seeds",
    "wilcoxon": "the two-sided Wilcoxon signed-rank test on the per-seed differences",
    "one-sample t": "the two-sided one-sample t-test against the constant",
}


def markdown(comparisons: Sequence[Comparison], *, correction: str = "holm", digits: int = 4) -> str:
    """A Markdown table of the comparisons, the family-corrected p computed here over exactly these
    comparisons (the declared family), then one line that explains the columns."""
    _correction(correction)
    rows = adjust(comparisons, correction)
    label = CORRECTION_LABEL[correction]
    head = ["arm", "baseline", "metric", "n", "Δ mean [95 % CI]", "p", f"p ({label})", "MDE (80 % power)", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in rows:
        delta = _num(c.mean_diff, digits, sign=True)
        if not (math.isnan(c.ci_low) or math.isnan(c.ci_high)):
            delta += f" [{_num(c.ci_low, digits, sign=True)}, {_num(c.ci_high, digits, sign=True)}]"
        cells = [c.arm, c.baseline, c.metric, str(c.n), delta, _num(c.p, digits), _num(c.p_adjusted, digits), _num(c.mde, digits), c.note]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    family = sum(not math.isnan(c.p) for c in rows)
    tests = [TEST_TEXT.get(t, t) for t in dict.fromkeys(c.test for c in rows)] or [TEST_TEXT["paired t"]]
    what = {"holm": "Holm-corrected (family-wise error)", "bh": "Benjamini-Hochberg-corrected (false-discovery rate)"}[correction]
    explain = (f"Δ mean is the mean over seeds of (arm − baseline), paired by seed (only seeds both have), with its 95 % bootstrap CI; "
               f"p is {', or '.join(tests)}; p ({label}) is {what} over the {family} comparison{'s' if family != 1 else ''} "
               f"in this table that have a p-value; MDE is the smallest true Δ that a two-sided paired t-test at α = 0.05 detects with 80 % power "
               f"at this n, given the observed sd of the differences — a non-significant Δ below it is not measurable, not absent.")
    return "\n".join(lines) + "\n\n" + explain + "\n"
