"""Training dynamics (config group ``dynamics``): Lightning callbacks that write per-sample records.

- ``base``: the base class of the options
- ``recording``: the options (``off``, ``losses``, ``gradients``)
- ``callbacks``: the recorders; ``store``: the per-sample store they write and scorers read
- ``checkpoints``: the checkpoints scorers read; ``mechanism``: per-pair mechanism columns
"""

from assay.dynamics.base import DynamicsConfig

__all__ = ["DynamicsConfig"]
