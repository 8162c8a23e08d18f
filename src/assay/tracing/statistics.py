"""The test statistics of palimpsestic membership inference (Kuditipudi et al. 2025, arXiv 2510.19796),
as pure functions of numbers: no model, no run.

Null hypothesis H₀: the suspect is independent of the order in which our run saw its examples. Our
order was a uniformly random shuffle, so under H₀ the step labels are a uniformly random assignment
independent of anything the suspect says; every p-value below is exact (or Monte Carlo exact) under
that assignment, whatever the data.

- Query (the authors' ``tracing/query/statistics.py::BasicStatistic``): ρ_S(tᵢ, Lᵢ), Spearman's rank
  correlation between each example's step tᵢ and its log-likelihood under the suspect, Lᵢ = −(mean
  token NLL); with a reference model, Lᵢ = log-lik under the suspect − log-lik under the reference
  (their ``model_stats − ref_stats`` on log-perplexities, sign flipped so that a *positive* ρ is the
  evidence: examples seen later are likelier under the suspect). Under H₀ ρ_S has the permutation
  distribution of a rank correlation; scipy's p is its large-sample t approximation (what the
  authors' script prints, two-sided); the p reported first is the one-sided p (alternative: ρ > 0,
  the direction palimpsestic memorisation predicts). A Monte Carlo permutation p,
  (1 + #{ρ_j ≥ ρ})/(m + 1) over m re-permutations of the step labels (their
  ``exact_permutation_test``, Alg. 1), is reported beside it; it cannot go below 1/(m + 1).
- Partition (``tracing/observation/metrics.py::spearman_matches``): ρ_S(s, c_s) over steps s, where
  c_s counts the matches of the suspect's text n-grams in the documents trained at step s; its p is
  the permutation p of the authors' null (the document → step map re-permuted).
- Reshuffle (``scripts/observation/tinystories.py::run_testing``): the rank of the real-order model's
  score among m models retrained on fresh shuffles: p = (1 + #{j : s_j ≥ s₀})/(m + 1), and the
  authors' z = (s₀ − mean_j s_j)/std_j.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

DECILES = 10


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(np.asarray(x, dtype=np.float64))


def permutation_null(a: np.ndarray, b: np.ndarray, permutations: int, seed: int, chunk: int = 256) -> np.ndarray:
    """[m] Spearman's ρ of ``a`` with ``b`` under ``permutations`` uniform re-permutations of ``a``'s labels."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    if denom == 0:
        return np.zeros(permutations)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, permutations, chunk):
        k = min(chunk, permutations - start)
        idx = np.argsort(rng.random((k, len(ra))), axis=1)  # k uniform permutations
        out.append(ra[idx] @ rb / denom)
    return np.concatenate(out) if out else np.zeros(0)


def spearman_test(steps: np.ndarray, values: np.ndarray, permutations: int = 999, seed: int = 0) -> dict:
    """ρ_S(steps, values) with its one-sided and two-sided scipy p-values and a permutation p."""
    from scipy.stats import spearmanr

    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if len(steps) < 3 or np.ptp(steps) == 0 or np.ptp(values) == 0:
        raise ValueError("Spearman's rho needs at least 3 examples with more than one step and more than one value")
    rho = float(spearmanr(steps, values).statistic)
    out = {
        "n": int(len(steps)),
        "rho": rho,
        "p_value": float(spearmanr(steps, values, alternative="greater").pvalue),
        "p_value_two_sided": float(spearmanr(steps, values).pvalue),
    }
    if permutations > 0:
        null = permutation_null(steps, values, permutations, seed)
        out["p_permutation"] = float((1 + np.sum(null >= rho - 1e-12)) / (permutations + 1))
        out["permutations"] = int(permutations)
    return out


def decile_curve(steps: np.ndarray, values: np.ndarray, bins: int = DECILES) -> list[dict]:
    """The memorisation curve: examples in training order (by step) cut into ``bins`` equal groups;
    per group its step range and the mean value (log-likelihood)."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=np.float64)
    order = np.argsort(steps, kind="stable")
    curve = []
    for k, idx in enumerate(np.array_split(order, min(bins, len(order)))):
        curve.append({"decile": k + 1, "first_step": int(steps[idx].min()), "last_step": int(steps[idx].max()),
                      "n": int(len(idx)), "mean": float(values[idx].mean())})
    return curve


def step_counts(doc_hits: np.ndarray, doc_steps: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """c_s for every s in ``steps``: the matches that fell on documents trained at step s."""
    counts = np.bincount(np.asarray(doc_steps), weights=np.asarray(doc_hits, dtype=np.float64), minlength=int(steps.max()) + 1)
    return counts[steps]


def partition_test(doc_hits: np.ndarray, doc_steps: np.ndarray, permutations: int = 999, seed: int = 0) -> dict:
    """φ_obs^part = ρ_S(s, c_s) over the steps that trained some document, and its p-value under the
    authors' null, the document → step map re-permuted (``BasicNGramStatistic(shuffle=True)``), by
    Monte Carlo over ``permutations`` maps. That permutation p is the one reported as ``p_value``: the
    steps hold unequal numbers of documents (a partial last batch; earlier epochs' steps, when an
    example's step is its last), so the counts are not exchangeable across steps and scipy's
    rank-correlation p (``p_value_scipy``, what the authors' script prints) is only approximate."""
    from scipy.stats import spearmanr

    doc_steps = np.asarray(doc_steps, dtype=np.int64)
    steps = np.unique(doc_steps)
    counts = step_counts(doc_hits, doc_steps, steps)
    base = {"n_steps": int(len(steps)), "matches": float(counts.sum()), "permutations": int(permutations)}
    if np.ptp(counts) == 0:
        return {**base, "rho": 0.0, "p_value": 1.0, "p_value_scipy": 1.0}
    rho = float(spearmanr(steps, counts).statistic)
    rng = np.random.default_rng(seed)
    null = np.array([spearmanr(steps, step_counts(doc_hits, rng.permutation(doc_steps), steps)).statistic for _ in range(permutations)])
    null = np.nan_to_num(null, nan=0.0)
    return {**base, "rho": rho, "p_value": float((1 + np.sum(null >= rho - 1e-12)) / (permutations + 1)),
            "p_value_scipy": float(spearmanr(steps, counts, alternative="greater").pvalue)}


def rank_test(real: float, shuffled: np.ndarray) -> dict:
    """The reshuffle test's exact p: the real-order score's rank among the m + 1 exchangeable scores
    (ties count against it), and the authors' z-score."""
    shuffled = np.asarray(shuffled, dtype=np.float64)
    m = len(shuffled)
    std = float(shuffled.std()) if m > 1 else 0.0
    z: Optional[float] = (real - float(shuffled.mean())) / std if std > 0 else None
    return {"m": m, "score_real_order": float(real), "scores_shuffled": shuffled.tolist(),
            "p_value": float((1 + np.sum(shuffled >= real)) / (m + 1)), "z": z}
