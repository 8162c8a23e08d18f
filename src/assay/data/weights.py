"""Domain weights every mixture computes with, as pure functions over numpy arrays: normalising,
temperature sampling, and the stages of a scheduled mixture. The online mixers' update rules build
on these (``assay.mixing.rules``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def normalise(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return w / w.sum()


def temperature_weights(sizes: np.ndarray, temperature: float) -> np.ndarray:
    """p_i ∝ n_i^(1/T): T=1 natural proportions, T→∞ uniform (the multilingual-BERT / XLM recipe)."""
    return normalise(np.asarray(sizes, dtype=np.float64) ** (1.0 / temperature))


# --------------------------------------------------------------------------------------------------
# Schedules: piecewise-constant weights over the fraction of training done.


@dataclass
class Stage:
    until: float
    """End of the stage as a fraction of training steps, in (0, 1]; stages are in order."""
    weights: dict = field(default_factory=dict)


def stage_at(stages: list[Stage], progress: float) -> int:
    """Index of the stage that covers ``progress`` ∈ [0, 1) (the first whose ``until`` exceeds it)."""
    for i, s in enumerate(stages):
        if progress < s.until:
            return i
    return len(stages) - 1
