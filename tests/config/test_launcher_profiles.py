"""Every SLURM launcher profile composes to assay's launcher, and Hydra can find that plugin; the
local cluster's profiles to the launcher that submits to this checkout's cluster."""

import pytest

import assay.config  # noqa: F401  (registers the schemas)
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf


@pytest.mark.parametrize("profile", ["slurm", "slurm_local", "slurm_ddp", "slurm_ddp_local"])
def test_slurm_profiles_use_the_watching_launcher(compose_cfg, profile):
    cfg = compose_cfg([f"hydra/launcher={profile}"])
    target = cfg.hydra.launcher._target_
    local = profile.endswith("_local")
    assert target == f"hydra_plugins.assay_slurm_launcher.{'LocalSlurmLauncher' if local else 'SlurmLauncher'}"
    found = {f"{c.__module__}.{c.__name__}": c for c in Plugins.instance().discover(Launcher)}
    from assay.run.cluster import is_local_launcher
    from assay.run.slurm import LocalClusterMixin, SweepWaitMixin

    assert issubclass(found[target], SweepWaitMixin)
    assert issubclass(found[target], LocalClusterMixin) is local is is_local_launcher(cfg.hydra.launcher)
    # Not resolved here: resolving the sweep directory claims it.
    assert OmegaConf.to_container(cfg.hydra.launcher, resolve=False)["submitit_folder"] == "${hydra.sweep.dir}/.submitit"
