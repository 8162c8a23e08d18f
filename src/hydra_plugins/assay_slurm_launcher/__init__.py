"""assay's SLURM launcher, where Hydra looks for launcher plugins (the ``hydra_plugins`` namespace).

The behaviour lives in :mod:`assay.run.slurm`: submitit's launcher, except that a job cancelled or lost
on a cluster without accounting ends the sweep's wait as a failed job; the local cluster's launcher
submits to this checkout's ``slurm/local_cluster.sh`` cluster.
"""

from assay.run.slurm import LocalClusterMixin, SweepWaitMixin
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurmLauncher


class SlurmLauncher(SweepWaitMixin, _SubmititSlurmLauncher):
    """``hydra/launcher=slurm`` (and the profiles built on it)."""


class LocalSlurmLauncher(LocalClusterMixin, SlurmLauncher):
    """``hydra/launcher=slurm_local`` (and ``slurm_ddp_local``): the single-node cluster of this
    checkout's ``slurm/local_cluster.sh`` (``SLURM_CONF`` pointed at it unless already set)."""
