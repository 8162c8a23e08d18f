"""Which SLURM cluster ``hydra/launcher=slurm_local`` submits to: this checkout's local cluster
(``slurm/local_cluster.sh``'s state dir), unless the user has set SLURM_CONF."""

import os

import pytest

from assay.errors import UserError
from assay.paths import CONF_DIR
from assay.run import cluster


@pytest.fixture
def no_slurm_env(monkeypatch):
    for key in ("SLURM_CONF", "ASSAY_SLURM_STATE"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_the_default_state_dir_is_the_checkouts(no_slurm_env):
    assert cluster.LOCAL_CLUSTER_SCRIPT.is_file()
    assert cluster.local_cluster_conf() == CONF_DIR.parent / ".slurm" / "slurm.conf"


def test_the_cluster_config_is_taken_when_slurm_conf_is_unset(no_slurm_env, tmp_path):
    (tmp_path / "slurm.conf").write_text("ClusterName=assaylocal\n")
    no_slurm_env.setenv("ASSAY_SLURM_STATE", str(tmp_path))
    cluster.use_local_cluster()
    assert os.environ["SLURM_CONF"] == str(tmp_path / "slurm.conf")


def test_a_users_slurm_conf_is_kept(no_slurm_env, tmp_path):
    no_slurm_env.setenv("ASSAY_SLURM_STATE", str(tmp_path / "never-started"))
    no_slurm_env.setenv("SLURM_CONF", "/site/slurm.conf")
    cluster.use_local_cluster()
    assert os.environ["SLURM_CONF"] == "/site/slurm.conf"


def test_a_cluster_never_started_is_one_line(no_slurm_env, tmp_path):
    no_slurm_env.setenv("ASSAY_SLURM_STATE", str(tmp_path / "never-started"))
    with pytest.raises(UserError) as e:
        cluster.use_local_cluster("slurm_ddp_local")
    text = str(e.value)
    assert f"no {tmp_path / 'never-started' / 'slurm.conf'}" in text and "slurm/local_cluster.sh up" in text and "\n" not in text
    assert "SLURM_CONF" not in os.environ

