"""Label noise (config group ``noise``): seeded, pure transforms of the training split only.

The ground truth is kept (``is_flipped``, ``is_corrupted``) so that selection scorers and robust
objectives can be checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from assay.lazy import datasets
import numpy as np
from omegaconf import II, MISSING

from assay.cards import MethodCard
from assay.errors import UserError, check
from assay.registry import register

FLAGS = ("is_corrupted", "is_flipped")
"""The ground-truth noise flags the transforms below leave in the training split: every selection is
scored against them, and the per-sample store and batches carry them."""


@dataclass
class NoiseConfig:
    name: str = MISSING
    p: float = 0.0
    """Probability that a training example is affected, in [0, 0.5)."""
    seed: int = II("seed")

    def __post_init__(self) -> None:
        check(0.0 <= self.p < 0.5, "noise.p", self.p, "must be in [0, 0.5)")

    def apply(self, train: datasets.Dataset, data_format: str) -> datasets.Dataset:
        return train

    def _mask(self, n: int) -> np.ndarray:
        return np.random.default_rng(self.seed).random(n) < self.p


@register("noise", "none")
@dataclass
class NoNoise(NoiseConfig):
    """No label noise."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        notes="Clean training data: the noise-free baseline.",
    )

    name: str = "none"


@register("noise", "pairwise_flip")
@dataclass
class PairwiseFlip(NoiseConfig):
    """Swap chosen and rejected with probability p (the Dr. DPO noise protocol); keeps ``is_flipped``."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Wu et al. 2025, Dr. DPO, distributionally robust DPO (ICLR 2025): its pairwise noise protocol",
        arxiv="2407.07880",
        code="junkangwu/Dr_DPO: preference_datasets.py (get_hh_pairwise_noise), as the research note reads it; not re-read",
        defaults={"p": "0.2 (the repo's command line noise_rate=0.2; the paper sweeps 10-40%; the repo config default is 0): follows "
                        "the command line"},
        deviations=(
            "Drawn with numpy's default_rng(seed), not Python's random under the repo's TemporarilySeededRandom: another flipped "
            "set for the same seed.",
            "Ground-truth rewards (where the data has them) are swapped with the responses; the repo also swaps its SFT target, "
            "which assay's preference data does not have.",
            "p must be below 0.5.",
        ),
        checked="tests/unit/data/test_noise.py: exactly the flagged pairs swapped at rate p, seeded; "
                "tests/unit/data/test_preference_noise_task.py: rewards swapped too",
        notes="Train split only; is_flipped keeps the ground truth for detection metrics.",
    )

    name: str = "pairwise_flip"
    p: float = 0.2

    def apply(self, train: datasets.Dataset, data_format: str) -> datasets.Dataset:
        if data_format != "preference":
            raise UserError("noise", self.name, f"needs preference data, but data.format={data_format}")
        return swap_pairs(train, self._mask(len(train)))


@register("noise", "gap_flip")
@dataclass
class GapFlip(NoiseConfig):
    """Flip pairs with a probability that grows as their ground-truth reward gap shrinks: annotators err
    more on close pairs (the noise model behind rDPO's and Dr. DPO's analyses). Keeps ``is_flipped``."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        defaults={"p": "0.2 (the expected flip rate): assay's choice", "temperature": "0.25 (reward units of the skills data): assay's choice"},
        deviations=(
            "The docstring's link to the noise models of rDPO's and Dr. DPO's analyses was not checked against those papers.",
        ),
        checked="tests/unit/data/test_preference_noise_task.py: flip probabilities by hand (their mean is p), close pairs flip "
                "far more often, rewards follow their texts",
        notes="assay's own noise model, not a published protocol: P(flip) ∝ exp(−gap/τ) over the ground-truth reward gaps, so "
              "annotators err on close pairs. Needs a reward_gap column (data=skills preference pairs).",
    )

    name: str = "gap_flip"
    p: float = 0.2
    """Expected share of flipped pairs (exact unless some pair's probability is capped at 1)."""
    temperature: float = 0.25
    """τ in P(flip_i) ∝ exp(−gap_i / τ), gap in reward units ([0, 1] on skills): small τ puts nearly all
    flips on the closest pairs, large τ approaches uniform flips."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.temperature > 0, "noise.temperature", self.temperature, "must be > 0")

    def flip_probabilities(self, gap: np.ndarray) -> np.ndarray:
        weights = np.exp(-(gap - gap.min()) / self.temperature)
        return np.clip(self.p * len(gap) * weights / weights.sum(), 0.0, 1.0)

    def apply(self, train: datasets.Dataset, data_format: str) -> datasets.Dataset:
        if data_format != "preference":
            raise UserError("noise", self.name, f"needs preference data, but data.format={data_format}")
        if "reward_gap" not in train.column_names:
            raise UserError("noise", self.name, "needs a ground-truth 'reward_gap' column (data=skills with data.format=preference has one)")
        prob = self.flip_probabilities(np.asarray(train["reward_gap"], dtype=np.float64))
        return swap_pairs(train, np.random.default_rng(self.seed).random(len(train)) < prob)


def swap_pairs(train: datasets.Dataset, flip: np.ndarray) -> datasets.Dataset:
    """Swap chosen and rejected (and their ground-truth rewards, where present) where ``flip``; adds
    ``is_flipped``. ``reward_gap`` keeps the true gap of the pair."""
    swapped = [("chosen", "rejected")] + [("chosen_reward", "rejected_reward")] * ("chosen_reward" in train.column_names)
    for a, b in swapped:
        old_a, old_b = train[a], train[b]
        train = train.remove_columns([a, b])
        train = train.add_column(a, [y if f else x for x, y, f in zip(old_a, old_b, flip)])
        train = train.add_column(b, [x if f else y for x, y, f in zip(old_a, old_b, flip)])
    return train.add_column("is_flipped", flip.tolist())


CORRUPTIONS = ("shuffle", "wrong_answer", "truncate")


@register("noise", "corrupt")
@dataclass
class Corrupt(NoiseConfig):
    """Replace a fraction p of completions (chosen, for pairs) with low-quality text; keeps ``is_corrupted``."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        defaults={"p": "0.2: assay's choice", "kinds": "shuffle, wrong_answer, truncate: assay's choice"},
        checked="tests/unit/data/test_noise.py: exactly the flagged completions change, each kind; "
                "tests/unit/data/test_preference_noise_task.py: the corrupted chosen response is re-scored",
        notes="Synthetic low-quality completions in the spirit of CLUES's corrupted outputs (CLUES's own corruption procedure "
              "was not checked); is_corrupted keeps the ground truth.",
    )

    name: str = "corrupt"
    p: float = 0.2
    kinds: list[str] = field(default_factory=lambda: list(CORRUPTIONS))
    """Drawn uniformly per corrupted example: ``shuffle`` (tokens in random order), ``wrong_answer``
    (another example's answer), ``truncate`` (first half only)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.kinds) > 0, "noise.kinds", self.kinds, f"must name at least one of {list(CORRUPTIONS)}")
        for k in self.kinds:
            check(k in CORRUPTIONS, "noise.kinds", k, f"each kind must be one of {list(CORRUPTIONS)}")

    def apply(self, train: datasets.Dataset, data_format: str) -> datasets.Dataset:
        column = "chosen" if data_format == "preference" else "completion"
        texts = list(train[column])
        corrupt = self._mask(len(texts))
        rng = np.random.default_rng(self.seed + 1)
        out = list(texts)
        for i in np.flatnonzero(corrupt):
            kind = self.kinds[rng.integers(len(self.kinds))]
            out[i] = _corrupt(texts, int(i), kind, rng)
        train = train.remove_columns(column).add_column(column, out)
        if {"chosen_reward", "answer"} <= set(train.column_names) and column == "chosen":
            # pointwise noise: the corrupted chosen response's ground truth follows the text
            from assay.data.rewards import skill_reward

            rewards = [skill_reward(a, c) for a, c in zip(train["answer"], out)]
            train = train.remove_columns("chosen_reward").add_column("chosen_reward", rewards)
        return train.add_column("is_corrupted", corrupt.tolist())


def _corrupt(texts: list[str], i: int, kind: str, rng: np.random.Generator) -> str:
    words = texts[i].split()
    if kind == "shuffle" and len(set(words)) > 1:
        shuffled = list(words)
        while shuffled == words:
            shuffled = [words[j] for j in rng.permutation(len(words))]
        return " ".join(shuffled)
    if kind == "truncate" and len(words) > 1:
        return " ".join(words[: len(words) // 2])
    # wrong_answer, and the fallback when shuffling/truncating would leave the text unchanged
    for _ in range(20):
        j = int(rng.integers(len(texts)))
        if texts[j] != texts[i]:
            return texts[j]
    return texts[i] + " " + texts[i]
