"""assay's SLURM launcher, where Hydra looks for launcher plugins (the ``hydra_plugins`` namespace).

The behaviour lives in :mod:`assay.run.slurm`: submitit's launcher, except that a job cancelled or lost
on a cluster without accounting ends the sweep's wait as a failed job.
"""

from assay.run.slurm import SweepWaitMixin
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurmLauncher


class SlurmLauncher(SweepWaitMixin, _SubmititSlurmLauncher):
    """``hydra/launcher=slurm`` (and the profiles built on it)."""
