"""What a run's results are called: the headline metrics and the flat, dotted config keys.

A run prints its headline metrics when it ends, and ``assay-compare`` reports the same ones by
default; resuming compares configs, and wandb and ``assay-compare`` group runs, by the same dotted
keys (``objective.name``, ``noise.p``).
"""

from __future__ import annotations

from typing import Any

HEADLINE = ("test/exact_match", "test/pref_acc", "test/win_rate", "test/kl_ref", "test/reward_margin", "test/loss", "val/exact_match", "val/loss")
"""The metrics a run is judged by, in the order they are shown (those a run has)."""


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys; an empty mapping stays a value."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    return out
