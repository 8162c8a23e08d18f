"""Test setup: offline always, caches in a temporary directory, and a compose helper."""

from __future__ import annotations

import os

# Before anything imports transformers/datasets/wandb: a test that would download must fail.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# One torch thread per test worker: with one worker per core, more threads only contend (a Sinkhorn
# test went from 4 s alone to 90 s beside another worker). Commands the tests start inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.pop("WANDB_API_KEY", None)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from assay.paths import CONF_DIR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HEAD = __import__("subprocess").run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip() or None
"""The commit every run of this suite must record in its provenance (None outside a git checkout)."""
# The model cache as the user has it (the autouse fixture points ASSAY_CACHE at a temporary dir).
USER_MODEL_CACHE = Path(os.environ.get("ASSAY_CACHE", Path.home() / ".cache" / "assay")).expanduser() / "models"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ASSAY_CACHE", str(tmp_path_factory.getbasetemp() / "assay-cache"))


def compose_config(overrides: list[str], output_dir: Path | None = None):
    """Compose ``conf/train.yaml`` as ``assay-train`` would, with the run directory at ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def compose_cfg():
    yield compose_config
    GlobalHydra.instance().clear()


def run_in_hydra(overrides: list[str], output_dir: Path) -> dict:
    """Run a full config in-process (inside an initialised Hydra, so multi-stage recipes can compose)."""
    from assay.train import run

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
        try:
            return run(cfg)
        finally:
            GlobalHydra.instance().clear()


def detection_from_artefact(selection_parquet: Path, flag: str) -> dict:
    """Detection recomputed from a saved selection alone (scores + ground-truth flags), with
    scikit-learn's ROC AUC: a low keep-score flags the noisy example."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    sel = pd.read_parquet(selection_parquet)
    noisy = sel[flag].to_numpy(dtype=bool)
    k = int(noisy.sum())
    lowest = np.lexsort((np.arange(len(sel)), sel["score"].to_numpy()))[:k]
    return {"auroc": float(roc_auc_score(noisy, -sel["score"])), "precision_at_k": float(noisy[lowest].mean()), "k": k}


COMMAND_CALLS = ("subprocess.", "assay_train(", "_train(", "start_processes(", "mp.spawn(")
"""What a test calls when it starts new processes: an assay command, or worker ranks of a process group
(a few seconds of imports each)."""


def _runs_a_command(item) -> bool:
    import inspect

    try:
        source = inspect.getsource(item.function)
    except (OSError, TypeError, AttributeError):
        return False
    return any(call in source for call in COMMAND_CALLS)


def pytest_collection_modifyitems(config, items):
    """Tests that start new processes (a command, worker ranks) are marked ``cli`` (``make test-fast`` leaves them
    out), and the longest tests go first (``slow``, then ``integration``), so that with several
    workers the long ones overlap with everything else instead of running alone at the end."""
    for item in items:
        if _runs_a_command(item):
            item.add_marker(pytest.mark.cli)
    rank = {"slow": 0, "integration": 1}
    items.sort(key=lambda item: min((rank[m.name] for m in item.iter_markers() if m.name in rank), default=2))
