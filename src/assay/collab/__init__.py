"""Collaborative data quality control: CLUES across private clients trained together on Flower.

The ``collab`` config group's schema is ``assay.config.CollabConfig``. ``data``: partitions,
per-client corruption, selection quality. ``local``: one party's training, checkpoints, merging and evaluation. ``apps``: the Flower
ClientApp and ServerApp. ``run``: the launcher behind ``assay-train collab=...``.
"""
