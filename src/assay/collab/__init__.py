"""Collaborative data quality control: CLUES across private clients trained together on Flower.

The ``collab`` config group's schema is ``assay.config.CollabConfig``. ``data``: partitions,
per-client corruption, selection quality. ``rules``: the collaborative rules of phase 2
(``collab/aggregation=fedavg|local|merge_linear|ties|ties_factors|fedbiot``, registry ``COLLAB_RULES``).
``local``: one party's training, checkpoints, merging and evaluation. ``apps``: the Flower
ClientApp and ServerApp. ``run``: the launcher behind ``assay-train collab=...``.
"""
