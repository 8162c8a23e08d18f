"""Every training run reports its throughput and MFU: to the logger every step and in ``summary.json``."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from tests.conftest import run_in_hydra

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false"]
RATES = ("speed/tokens_per_s", "speed/samples_per_s", "speed/mfu")


def _check(run_dir) -> dict:
    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    for key in RATES:
        assert math.isfinite(metrics[key]) and metrics[key] > 0, key
    assert metrics["speed/mfu"] <= 1.0
    assert metrics["speed/peak_flops"] > 0 and metrics["speed/timed_steps"] == 3  # 4 steps, the first untimed
    # the rates are consistent with each other: tokens per sample and FLOPs per token of this model
    assert metrics["speed/tokens_per_s"] > metrics["speed/samples_per_s"]
    assert metrics["speed/mfu"] == pytest.approx(metrics["speed/tokens_per_s"] * metrics["speed/flops_per_token"] / metrics["speed/peak_flops"], rel=1e-6)
    history = pd.read_csv(run_dir / "metrics.csv")
    assert all(history[key].dropna().gt(0).all() and history[key].notna().sum() == 3 for key in RATES)  # steps 2-4
    return metrics


def test_an_sft_run_reports_tokens_samples_and_mfu_against_the_measured_peak(tmp_path):
    run_in_hydra(FAST, tmp_path)
    metrics = _check(tmp_path)
    assert metrics["speed/peak_source"].startswith("measured") and "threads" in metrics["speed/peak_source"]


def test_a_dpo_run_reports_them_against_a_given_peak(tmp_path):
    run_in_hydra([*FAST, "objective=dpo", "data.format=preference", "trainer.peak_flops=5e11"], tmp_path)
    metrics = _check(tmp_path)
    assert metrics["speed/peak_flops"] == 5e11 and metrics["speed/peak_source"] == "trainer.peak_flops"


def test_throughput_can_be_turned_off(tmp_path):
    summary = run_in_hydra([*FAST, "trainer.throughput=false", "trainer.max_steps=2"], tmp_path)
    assert not [k for k in summary["metrics"] if k.startswith("speed/")]
    assert not [c for c in pd.read_csv(tmp_path / "metrics.csv").columns if c.startswith("speed/")]
