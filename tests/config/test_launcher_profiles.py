"""Every SLURM launcher profile composes to assay's launcher, and Hydra can find that plugin."""

import pytest

import assay.config  # noqa: F401  (registers the schemas)
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf


@pytest.mark.parametrize("profile", ["slurm", "slurm_local", "slurm_ddp"])
def test_slurm_profiles_use_the_watching_launcher(compose_cfg, profile):
    cfg = compose_cfg([f"hydra/launcher={profile}"])
    target = cfg.hydra.launcher._target_
    assert target == "hydra_plugins.assay_slurm_launcher.SlurmLauncher"
    found = {f"{c.__module__}.{c.__name__}": c for c in Plugins.instance().discover(Launcher)}
    from assay.run.slurm import SweepWaitMixin

    assert issubclass(found[target], SweepWaitMixin)
    # Not resolved here: resolving the sweep directory claims it.
    assert OmegaConf.to_container(cfg.hydra.launcher, resolve=False)["submitit_folder"] == "${hydra.sweep.dir}/.submitit"
