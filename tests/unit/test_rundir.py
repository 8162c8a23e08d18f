"""Run directories are claimed exclusively: runs (and sweeps) that start in the same second never share one."""

import multiprocessing as mp
import pickle
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import assay.config  # noqa: F401  (registers the schemas)
from assay.paths import CONF_DIR
from assay.paths import claim_unique_dir


def _started_at_ten(cfg):
    """Pin the config's ``now`` (composing resolves and caches it) to one second, as for two runs
    started in the same second."""
    OmegaConf.get_cache(cfg)["now"] = {("%Y-%m-%d",): "2026-12-01", ("%H-%M-%S",): "10-00-00"}
    return cfg


def _hydra_cfg(log_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"paths.log_dir={log_dir}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


@pytest.mark.parametrize("key, kind", [("hydra.run.dir", "runs"), ("hydra.sweep.dir", "multirun")])
def test_default_directories_of_two_runs_in_one_second_differ(tmp_path, key, kind):
    first, second = _started_at_ten(_hydra_cfg(tmp_path)), _started_at_ten(_hydra_cfg(tmp_path))  # two processes' configs
    a, b = OmegaConf.select(first, key), OmegaConf.select(second, key)
    assert a != b
    assert Path(a) == tmp_path / "train" / kind / "2026-12-01_10-00-00"
    assert Path(b) == tmp_path / "train" / kind / "2026-12-01_10-00-00_1"
    assert Path(a).is_dir() and Path(b).is_dir()
    # Resolving again (Hydra does, once per job of a sweep) returns the claim, not a new directory.
    assert OmegaConf.select(first, key) == a
    assert sorted(p.name for p in (tmp_path / "train" / kind).iterdir()) == ["2026-12-01_10-00-00", "2026-12-01_10-00-00_1"]


def test_claim_travels_with_the_pickled_job_config(tmp_path):
    """A SLURM job (and its requeues) unpickles the sweep's config: it must land in the claimed
    directory, not claim another."""
    cfg, copy = _started_at_ten(_hydra_cfg(tmp_path)), _hydra_cfg(tmp_path)
    claimed = OmegaConf.select(cfg, "hydra.sweep.dir")
    job = pickle.loads(pickle.dumps(cfg))
    OmegaConf.copy_cache(from_config=job, to_config=copy)  # what Hydra's load_sweep_config does per job
    assert OmegaConf.select(job, "hydra.sweep.dir") == claimed == OmegaConf.select(copy, "hydra.sweep.dir")
    assert len(list((tmp_path / "train" / "multirun").iterdir())) == 1


def _claim(base: str, barrier, out) -> None:
    barrier.wait()
    out.put(claim_unique_dir(base))


@pytest.mark.cli
def test_concurrent_claims_are_all_distinct(tmp_path):
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(6), ctx.Queue()
    base = str(tmp_path / "logs" / "same-second")
    procs = [ctx.Process(target=_claim, args=(base, barrier, out)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    claims = [out.get(timeout=5) for _ in procs]
    assert len(set(claims)) == 6
    assert sorted(Path(c).name for c in claims) == sorted(["same-second"] + [f"same-second_{i}" for i in range(1, 6)])
