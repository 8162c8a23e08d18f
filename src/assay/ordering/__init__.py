"""Orderings (config group ``ordering``): kept rows + scores + epoch + seed -> a permutation.

Orderings are pure and seeded; one resumable sampler (``assay.ordering.sampler``) serves them.

- ``base``: the ordering base class and the keys it sorts by
- ``baselines``: ``random`` and ``sequential``
- ``curricula``: score- and group-driven orderings (curricula, folding, blocked, interleaved)
- ``sampler``: the resumable sampler
"""

from assay.ordering.base import OrderingConfig, check_score_file, constant_keys_message, keys_for_rows, resolve_keys

__all__ = ["OrderingConfig", "check_score_file", "constant_keys_message", "keys_for_rows", "resolve_keys"]
