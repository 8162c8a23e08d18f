"""The run machinery: what every run does whatever it trains, with no research content.

- ``dirs``         run directories: what a run writes, the claim and lock of a starting run, failure records
- ``resume``       ``resume=<run dir>`` and ``ckpt_path``: the command line replayed, the saved config compared
- ``frozen_base``  a LoRA run's checkpoints without the frozen base weights (rebuilt and checked on resume)
- ``log``          what a run prints and what its ``train.log`` holds
- ``results``      metric names (the headline metrics) and flattening nested configs and metrics
- ``sweeps``       command lines -> every job's overrides (Hydra flags, a multirun's grid, a search space)
- ``preflight``    compose and validate every job of a command before any job starts, with:
- ``datachecks``   every local data file a job reads exists, is readable and non-empty
- ``machine``      the trainer against the machine its jobs run on (GPUs, precision, strategy)
- ``cluster``      the SLURM launcher against the partition (``sinfo``) before a sweep is submitted
- ``slurm``        following a submitted sweep on SLURM (submitit, with or without accounting)
- ``preemption``   SIGUSR/SIGTERM checkpoints, requeue, atomic checkpoint writes, divergence stops
- ``distributed``  several processes: ranks, once-only work, the final barrier
- ``peak``         the device's peak FLOP/s: a GPU's datasheet, or a CPU matmul measured once and cached
- ``speed``        every run's tokens/s, samples/s and MFU (model FLOPs per token, the Lightning callback)

Nothing is imported here: ``from assay.run.log import info`` loads that module alone, so a low layer
(``assay.data`` logs through ``run.log``) never pulls in the config that ``run.preflight`` composes.
``tests/unit/test_import_layers.py`` places each module of this package in its own layer.
"""
