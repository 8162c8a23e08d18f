"""Update rules of the online mixers, as pure functions / small state machines over numpy arrays.

Each rule is checked in ``tests/unit/test_mixing_rules.py`` against numbers derived by hand from the
paper's equation and the authors' released update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from assay.data.weights import normalise, temperature_weights  # noqa: F401  (the static rules every mixture shares)


# --------------------------------------------------------------------------------------------------
# DoReMi (Xie et al. 2023, arXiv 2305.10429, Algorithm 1; sangmichaelxie/doremi, trainer.py
# ``update_domain_weights`` with ``doremi_optimizer=doremiv1``).


def doremi_step(weights: np.ndarray, scores: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    """One exponentiated-gradient step of the domain weights α on the per-domain excess losses λ:

        α' = softmax(log α + η·λ);   α ← (1 − c)·α' + c/k

    (Algorithm 1, step 2; the released code computes the same in log space and smooths after the
    softmax). ``scores`` are λ_i = mean over domain i's examples of max(ℓ_proxy − ℓ_ref, 0)."""
    logits = np.log(np.asarray(weights, dtype=np.float64)) + eta * np.asarray(scores, dtype=np.float64)
    logits -= logits.max()
    new = np.exp(logits)
    new /= new.sum()
    return (1.0 - smoothing) * new + smoothing / len(new)


@dataclass
class DoReMiState:
    """DoReMi's running state: the current weights, the last excess loss of every domain (a domain
    absent from the batches since the last update keeps its previous score, as in the released
    code), and the running average of the weights over updates (the recipe's output)."""

    weights: np.ndarray
    scores: np.ndarray = None  # type: ignore[assignment]
    average: np.ndarray = None  # type: ignore[assignment]
    updates: int = 0

    def __post_init__(self) -> None:
        self.weights = normalise(self.weights)
        if self.scores is None:
            self.scores = np.zeros_like(self.weights)
        if self.average is None:
            self.average = np.zeros_like(self.weights)

    def update(self, excess: np.ndarray, present: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
        """``excess[i]``: mean clipped excess loss of domain i since the last update (ignored where
        ``present[i]`` is false)."""
        self.scores = np.where(present, excess, self.scores)
        self.weights = doremi_step(self.weights, self.scores, eta, smoothing)
        self.updates += 1
        self.average = self.average + (self.weights - self.average) / self.updates
        return self.weights


# --------------------------------------------------------------------------------------------------
# ODM: online data mixing as a multi-armed bandit (Albalak et al. 2023, arXiv 2312.02406), EXP3 with
# the training loss as reward (alon-albalak/online-data-mixing, megatron/data/data_sampling_utils.py,
# ``Exp3WeightUpdater``).


@dataclass
class Exp3State:
    """EXP3 over k domains (arms).

    At update t (t = 1, 2, ...), for each domain i observed since the last update with reward r_i:
        R̂_i ← R̂_i + r_i / π_i                     (importance-weighted cumulative reward; the
                                                     released code), or, with smoothing α,
        R̂_i ← α·R̂_i + (1 − α)·r_i / π_i           (the paper's moving average, Algorithm 1)
        ε_t = min(1/k, sqrt(ln k / (k·t)))
        π_i ∝ (1 − k·ε_t)·exp(ε_{t−1}·R̂_i) / Σ_j exp(ε_{t−1}·R̂_j) + ε_t
    with ε_0 = 1/k. The reward is the domain's mean training loss divided by ``reward_scale``
    (the released code divides by 10): high loss = much left to learn = sample more.
    Our batches mix domains, so r_i is weighted by the share of the batch domain i filled
    (n_i/n, whose expectation is π_i): r_i/π_i stays an unbiased estimate of the domain's reward.
    """

    probabilities: np.ndarray
    cumulative: np.ndarray = None  # type: ignore[assignment]
    eps: float = 0.0
    updates: int = 0

    def __post_init__(self) -> None:
        self.probabilities = normalise(self.probabilities)
        k = len(self.probabilities)
        if self.cumulative is None:
            self.cumulative = np.zeros(k)
        if self.eps == 0.0 and self.updates == 0:
            self.eps = 1.0 / k

    def update(self, rewards: np.ndarray, present: np.ndarray, smoothing: Optional[float] = None) -> np.ndarray:
        k = len(self.probabilities)
        estimate = np.where(present, np.asarray(rewards, dtype=np.float64) / self.probabilities, 0.0)
        if smoothing is None:
            self.cumulative = self.cumulative + estimate
        else:
            self.cumulative = np.where(present, smoothing * self.cumulative + (1.0 - smoothing) * estimate, self.cumulative)
        self.updates += 1
        previous = self.eps
        self.eps = min(1.0 / k, math.sqrt(math.log(k) / (k * self.updates)))
        logits = previous * self.cumulative
        logits = logits - logits.max()  # exp(ε R̂) / Σ exp(ε R̂) is shift-invariant
        soft = np.exp(logits) / np.exp(logits).sum()
        weights = (1.0 - k * self.eps) * soft + self.eps
        self.probabilities = weights / weights.sum()
        return self.probabilities


# --------------------------------------------------------------------------------------------------
# Skill-it (Chen et al. 2023, arXiv 2307.14430, Algorithm 1; HazyResearch/skill-it,
# trainer/mw_trainer.py).


def skill_it_weights(prior: np.ndarray, graph: np.ndarray, losses: list[np.ndarray], eta: float, window: int) -> np.ndarray:
    """p_i ∝ p0_i · exp(η · Σ_j A_ij · Σ_{τ in the last ``window`` evaluations} L_τ,j)

    A is the skills graph (rows: training skills, columns: evaluated skills; A_ij > 0 when training
    on i lowers the loss of j), L_τ the per-skill validation losses of evaluation τ."""
    recent = np.asarray(losses[-window:], dtype=np.float64).sum(axis=0)
    logits = np.log(np.asarray(prior, dtype=np.float64)) + eta * (np.asarray(graph, dtype=np.float64) @ recent)
    logits -= logits.max()
    return normalise(np.exp(logits))


def graph_from_gradients(train_grads: np.ndarray, eval_grads: np.ndarray) -> np.ndarray:
    """A first-order probe of the skills graph: a small step on skill i's training gradient g_i
    lowers skill j's validation loss by ≈ lr·⟨g_i, h_j⟩, and a step on j itself by ≈ lr·⟨g_j, h_j⟩.
    A_ij = clip(⟨g_i, h_j⟩ / ⟨g_j, h_j⟩, 0, 1), with A_jj = 1 (Skill-it estimates the same ordering
    relation from loss curves of runs on {j} vs {i, j}; this replaces those runs by one gradient
    per skill)."""
    g, h = np.asarray(train_grads, dtype=np.float64), np.asarray(eval_grads, dtype=np.float64)
    cross = g @ h.T  # [i, j] = <g_i, h_j>
    own = np.diag(cross).copy()
    own[own <= 0] = np.inf  # a skill whose own step does not help itself: no edge can be measured
    graph = np.clip(cross / own[None, :], 0.0, 1.0)
    np.fill_diagonal(graph, 1.0)
    return graph
