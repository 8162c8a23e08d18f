"""The cluster environment is decided by assay, not guessed by Lightning: local outside SLURM (with
``srun`` on PATH, Lightning's hint to use it goes to ``train.log`` only), SLURM's inside an allocation,
torchrun's under torchrun."""

import os
import stat
import warnings

import pytest
from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment, TorchElasticEnvironment

from assay.run.preemption import cluster_environment, cluster_plugins, in_slurm_allocation


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(("SLURM_", "TORCHELASTIC_")) or key in ("LOCAL_RANK", "GROUP_RANK", "RANK", "WORLD_SIZE", "LSB_JOBID", "LSB_DJOB_RANKFILE"):
            monkeypatch.delenv(key)
    srun = tmp_path / "srun"  # as on every SLURM login node
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return monkeypatch


def test_outside_slurm_the_environment_is_local_and_the_srun_hint_is_left_to_the_run_log(clean_env):
    """The hint is a library warning like any other: the run's log takes it off the console and into
    ``train.log`` (checked end to end in tests/integration/test_run_output.py), nothing drops it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = cluster_environment()
        SLURMEnvironment.detect()  # Lightning's own probe (it runs at every fit/test)
    assert type(env) is LightningEnvironment and not in_slurm_allocation()
    assert [w for w in caught if "The `srun` command is available" in str(w.message)]


def test_inside_an_allocation_the_slurm_environment_is_chosen_without_auto_requeue(clean_env):
    for key, value in {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "assay", "SLURM_JOB_ID": "17", "SLURM_PROCID": "1",
                       "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_NODELIST": "node1"}.items():
        clean_env.setenv(key, value)
    env = cluster_environment()
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False
    assert env.global_rank() == 1 and env.world_size() == 2 and env.creates_processes_externally
    assert any(isinstance(p, SLURMEnvironment) for p in cluster_plugins())


def test_an_interactive_allocation_is_not_a_slurm_launch(clean_env):
    clean_env.setenv("SLURM_NTASKS", "1")
    clean_env.setenv("SLURM_JOB_NAME", "interactive")
    assert not in_slurm_allocation() and type(cluster_environment()) is LightningEnvironment


def test_torchrun_takes_precedence_even_inside_slurm(clean_env):
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "assay", "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
                       "GROUP_RANK": "0", "TORCHELASTIC_RUN_ID": "x"}.items():
        clean_env.setenv(key, value)
    assert isinstance(cluster_environment(), TorchElasticEnvironment)
