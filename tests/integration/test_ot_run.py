"""End-to-end runs with the OT valuations (LAVA, GOT-D) as the selection stage."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import USER_MODEL_CACHE, run_in_hydra

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false", "noise=corrupt", "noise.p=0.3"]
MINILM = USER_MODEL_CACHE / "all-MiniLM-L6-v2"


def read(run_dir):
    sel = pd.read_parquet(run_dir / "selection.parquet")
    values = pd.read_parquet(run_dir / "ot_values.parquet")
    assert list(sel["id"]) == list(values["id"])  # one row per training example, keyed by id
    np.testing.assert_allclose(sel["score"], -values["ot_value"])  # keep score = −value (higher value = more harmful)
    return sel, values


def test_lava_with_the_run_model_writes_the_selection(tmp_path):
    summary = run_in_hydra([*FAST, "selection=lava", "selection.embedder=hidden_mean", "selection.selector.fraction=0.75"], tmp_path)
    assert summary["status"] == "completed"
    sel, _ = read(tmp_path)
    assert len(sel) == 120 and sel["kept"].sum() == 90 == summary["data"]["kept_examples"]
    cached = sorted((Path(os.environ["ASSAY_CACHE"]) / "embeddings").glob("hidden_mean-*.npy"))
    assert len(cached) >= 2  # pool and target, keyed by config, data and weights


@pytest.mark.skipif(not (MINILM / "config.json").is_file(), reason="run `assay-fetch minilm` first")
def test_lava_with_minilm_and_gotd(tmp_path):
    path = f"selection.embedder_options={{path: {MINILM}}}"
    summary = run_in_hydra([*FAST, "selection=lava", "selection.embedder=minilm", path], tmp_path / "lava")
    sel, _ = read(tmp_path / "lava")
    assert sel["kept"].sum() == int(0.8 * 120) == summary["data"]["kept_examples"]
    summary = run_in_hydra([*FAST, "selection=gotd", path, "selection.selector.count=30"], tmp_path / "gotd")
    sel, _ = read(tmp_path / "gotd")
    assert sel["kept"].sum() == 30 == summary["data"]["kept_examples"]


def test_unknown_embedder_is_one_line(tmp_path):
    from assay.errors import UserError

    with pytest.raises(UserError, match=r"selection.embedder='bert'.*must be one of"):
        run_in_hydra([*FAST, "selection=lava", "selection.embedder=bert"], tmp_path)
