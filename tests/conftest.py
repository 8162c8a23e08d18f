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


def without_speed(metrics):
    """Metrics (a mapping, or a ``metrics.csv`` frame) without the wall-clock ``speed/...`` ones
    (assay.run.speed): two runs of the same config agree on everything else, not on their timing."""
    if hasattr(metrics, "columns"):
        return metrics.drop(columns=[c for c in metrics.columns if str(c).startswith("speed/")])
    return {k: v for k, v in metrics.items() if not k.startswith("speed/")}


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


CHEAP_TOOLS = {"git", "hostname", "id", "nproc", "nvidia-smi", "sacct", "scancel", "sinfo", "squeue", "scontrol", "uname", "which"}
"""Processes that are not a tier of their own: a tool answering in milliseconds (the run provenance reads git)."""


def run_assay(args: list[str], cwd: Path, command: str = "assay.train", timeout: float = 600, env: dict | None = None,
              launcher: list[str] | None = None) -> "subprocess.CompletedProcess":
    """An assay command as a user starts it (``python -m assay.train ...``; ``launcher`` replaces the
    ``python -m <command>`` prefix, e.g. to inject a fault), output captured. The one way the tests start
    a command: through the ``assay_cli`` fixture, which marks the test ``cli``, or directly from a test
    marked ``cli``."""
    import subprocess
    import sys

    return subprocess.run([*(launcher or [sys.executable, "-m", command]), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def assay_cli():
    """Start an assay command in a new process (``assay_cli(args, cwd, command="assay.train")``); the test is ``cli``."""
    return run_assay


def _starts_a_process(executable) -> bool:
    name = os.path.basename(str(executable[0] if isinstance(executable, (list, tuple)) else str(executable).split()[0]))
    return name not in CHEAP_TOOLS


@pytest.fixture(autouse=True)
def _process_tier(request, monkeypatch):
    """The ``cli`` tier is exact: a test that starts a process (an assay command, worker ranks, a
    cluster job) must be marked ``cli`` (or use ``assay_cli``), and a ``cli`` test that passes must
    have started one. ``make test-fast`` leaves the tier out, so a mark that lies costs either speed or
    coverage there."""
    import multiprocessing.process
    import subprocess

    marked = request.node.get_closest_marker("cli") is not None
    started: list[str] = []
    execute, start = subprocess.Popen._execute_child, multiprocessing.process.BaseProcess.start

    def execute_child(self, args, *rest, **kw):
        if _starts_a_process(args):
            if not marked:
                raise AssertionError(f"{request.node.nodeid} starts a process ({args if isinstance(args, str) else ' '.join(map(str, args))[:120]}) "
                                     "but is not marked cli: use the assay_cli fixture or @pytest.mark.cli")
            started.append(str(args))
        return execute(self, args, *rest, **kw)

    def process_start(self):
        if not marked:
            raise AssertionError(f"{request.node.nodeid} starts worker processes but is not marked cli: mark it @pytest.mark.cli")
        started.append("multiprocessing")
        return start(self)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_child)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", process_start)
    yield
    report = getattr(request.node, "_call_report", None)
    if marked and not started and report is not None and report.passed:
        pytest.fail(f"{request.node.nodeid} is marked cli but started no process: drop the mark (or the assay_cli fixture)", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call":
        item._call_report = outcome.get_result()


def _folder_tier_mismatch(item) -> bool:
    """An ``integration`` test (it trains a model end to end) outside ``tests/integration``, or a test
    inside it that is not one (``tests/golden`` holds golden values of both kinds)."""
    folder = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
    trains = item.get_closest_marker("integration") is not None
    return (folder == "integration") != trains and folder != "golden"


def pytest_collection_modifyitems(config, items):
    """Tests that start new processes (a command, worker ranks) are ``cli`` (``make test-fast`` leaves them
    out): marked where they are written, or by using the ``assay_cli`` fixture (``_process_tier`` checks
    both ways at run time). The longest tests go first (``slow``, then ``integration``), so that with
    several workers the long ones overlap with everything else instead of running alone at the end."""
    for item in items:
        if "assay_cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cli)
    misplaced = [item.nodeid for item in items if _folder_tier_mismatch(item)]
    if misplaced:  # the tiers match their folders: tests/integration trains, tests/unit and tests/config do not
        raise pytest.UsageError("tests in the wrong folder for their tier (integration-marked tests live in tests/integration, "
                                "and only there): " + ", ".join(misplaced))
    rank = {"slow": 0, "integration": 1}
    items.sort(key=lambda item: min((rank[m.name] for m in item.iter_markers() if m.name in rank), default=2))
