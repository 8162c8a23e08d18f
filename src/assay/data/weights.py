"""Domain weights every mixture computes with, as pure functions: normalising, temperature sampling,
the stages of a scheduled mixture, and the check of weights given in a config. The online mixers'
update rules build on these (``assay.mixing.odm``, ``skill_it``, ``doremi_resample``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.errors import check


def normalise(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return w / w.sum()


def normalise_shares(w: dict[str, float]) -> dict[str, float]:
    """Per-domain weights scaled to sum to one."""
    z = sum(w.values())
    return {s: v / z for s, v in w.items()}


def check_weights(field_name: str, weights: dict[str, Any]) -> None:
    """Weights given in a config (``field_name``) are finite, >= 0, and not all zero."""
    for s, w in weights.items():
        ok = isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
        check(ok, f"{field_name}.{s}", w, "weights must be finite and >= 0")
    check(sum(weights.values()) > 0, field_name, dict(weights), "at least one weight must be > 0 (all zero or negative weights select nothing)")


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
