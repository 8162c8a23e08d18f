"""ODM: online data mixing as a multi-armed bandit (Albalak et al. 2023, arXiv 2312.02406), EXP3 with
the training loss as reward (alon-albalak/online-data-mixing, megatron/data/data_sampling_utils.py,
``Exp3WeightUpdater``): the config (``mixture=odm``), the mixer and the EXP3 rule.

    assay-train mixture=odm
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from assay.cards import MethodCard
from assay.errors import check
from assay.mixing.base import DomainStats, Mixer, OnlineMixture, normalise
from assay.registry import register


@register("mixture", "odm")
@dataclass
class ODMMixture(OnlineMixture):
    """ODM: online data mixing as a multi-armed bandit, EXP3 with the training loss as reward (Albalak et al. 2023)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Albalak et al. 2023, Efficient Online Data Mixing For Language Model Pre-Training (ODM)",
        arxiv="2312.02406",
        code="alon-albalak/online-data-mixing: megatron/data/data_sampling_utils.py (Exp3WeightUpdater): its update arithmetic "
             "and reward / 10 read and transcribed in the test",
        defaults={
            "reward_scale": "10 (the released code divides the loss by 10): follows",
            "smoothing": "null, cumulative importance-weighted rewards (the released code): follows the code; α = 0.9 is the "
                         "moving average of DataFlex's port",
            "warmup_steps": "0 (DataFlex's port: 2,000 steps; the released runs' value not checked): differs: toy runs are short",
        },
        deviations=(
            "One update per update_every steps over every domain seen since the last one, each reward weighted by the domain's "
            "share of the batch; the released code updates one dataset per call with its own batch's loss.",
        ),
        checked="tests/unit/mixing/test_mixing_rules.py: EXP3 by hand and against a transcription of the released update over "
                "60 steps; the reward is the scaled loss times the batch share",
    )

    name: str = "odm"
    reward_scale: float = 10.0
    """Rewards are losses / this (the released code divides by 10)."""
    smoothing: Optional[float] = None
    """null: cumulative importance-weighted rewards (the released code); α in [0, 1): the paper's moving
    average R̂ ← α·R̂ + (1 − α)·r/π (DataFlex uses 0.9)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.reward_scale > 0, "mixture.reward_scale", self.reward_scale, "must be > 0")
        if self.smoothing is not None:
            check(0.0 <= self.smoothing < 1.0, "mixture.smoothing", self.smoothing, "must be in [0, 1) (or null)")

    def mixer(self, domains, initial):
        return ODMMixer(domains, initial, self.reward_scale, self.smoothing)


class ODMMixer(Mixer):
    signals = ("train_loss",)

    def __init__(self, domains, initial, reward_scale: float, smoothing: Optional[float]):
        super().__init__(domains, initial)
        self.reward_scale, self.smoothing = reward_scale, smoothing
        self.state = Exp3State(self.weights.copy())

    def update(self, stats: DomainStats) -> dict[str, np.ndarray]:
        share = stats.count / max(stats.count.sum(), 1)
        rewards = np.nan_to_num(stats["train_loss"], nan=0.0) / self.reward_scale * share
        self.weights = self.state.update(rewards, stats.present, self.smoothing)
        return {"weight": self.weights, "reward": rewards, "estimated_reward": self.state.cumulative}

    def state_dict(self) -> dict:
        s = self.state
        return {"probabilities": s.probabilities.tolist(), "cumulative": s.cumulative.tolist(), "eps": s.eps, "updates": s.updates}

    def load_state_dict(self, state: dict) -> None:
        self.state = Exp3State(np.asarray(state["probabilities"]), np.asarray(state["cumulative"]), float(state["eps"]), int(state["updates"]))
        self.weights = self.state.probabilities


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
