"""The GPU benchmark script runs end to end in its smoke mode (on a CPU), so it cannot rot unseen."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.cli
@pytest.mark.integration
@pytest.mark.slow
def test_gpu_benchmark_smoke_mode_writes_its_results(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "run.py"), "--smoke", "--out", str(tmp_path), "--section-timeout", "2400"],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["smoke"] is True
    sections = results["sections"]
    assert not any("error" in s for s in sections.values()), sections
    dpo = sections["dpo"]
    seen = {(r["mode"], r["contender"]) for r in dpo["rows"]}
    assert {("lora", c) for c in dpo["contenders"]} == seen  # smoke: LoRA only (full fine-tuning is the same script, --modes full)
    assert all(r["tokens_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in dpo["rows"])
    assert 100 <= dpo["data"]["prompt_tokens"][1] <= 300 and 50 <= dpo["data"]["response_tokens"][1] <= 200  # realistic lengths
    if "trl" in dpo["contenders"]:
        assert set(dpo["ratios"]) == {"lora"} and all(v["peak_memory_assay_over_trl"] > 0 for v in dpo["ratios"].values())
    sft = sections["sft"]  # the same script with --objective sft: prompt + chosen reply as an SFT example
    assert {("lora", c) for c in sft["contenders"]} == {(r["mode"], r["contender"]) for r in sft["rows"]}
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in sft["rows"])
    assert sft["data"]["examples"] == 6 and 100 <= sft["data"]["prompt_tokens"][1] <= 300 and 50 <= sft["data"]["completion_tokens"][1] <= 200
    if "trl" in sft["contenders"]:
        assert set(sft["ratios"]) == {"lora"} and all(v["tokens_per_s_assay_over_trl"] > 0 for v in sft["ratios"].values())
    grads = sections["grad_features"]
    assert grads["feature_shape"] == [grads["rows"], grads["proj_dim"]] and grads["examples_per_s"] > 0
    assert sections["ot"]["finite_values"] and sections["ot"]["pool"] == 2000
    assert "skipped" in sections["ddp"]
    markdown = (tmp_path / "results.md").read_text()
    assert "DPO: assay vs TRL" in markdown and "SFT: assay vs TRL SFTTrainer" in markdown
