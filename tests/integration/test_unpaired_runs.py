"""End-to-end KTO runs on unpaired data: a JSONL file of (prompt, completion, label) rows, and the skills pairs unpaired."""

import json

import pytest

from tests.conftest import run_in_hydra

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false", "logger=none", "eval.val_generate=false", "trainer.max_steps=2"]


def test_kto_on_a_jsonl_file_of_unpaired_rows(tmp_path):
    from assay.dynamics.store import read_store

    rows = []
    for i in range(24):
        a, b = i % 7, i % 5
        rows.append({"prompt": f"add {a} {b}", "completion": str(a + b), "label": True})
        rows.append({"prompt": f"add {a} {b}", "completion": str(a + b + 1), "label": False})
    path = tmp_path / "unpaired.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    summary = run_in_hydra([*FAST, "data=jsonl", f"data.train_file={path}", "data.format=unpaired", "objective=kto",
                            "objective.undesirable_weight=0.8"], out)
    assert summary["status"] == "completed" and summary["choices"]["objective"] == "kto"
    assert summary["reference_logps"] != {}  # the reference log-probs (completion and mismatched) came from the cache
    assert {"test/loss", "test/kl", "test/reward", "test/label_acc"} <= set(summary["metrics"])
    records = read_store(out / "dynamics")
    assert {"loss", "logratio", "kl", "label", "confidence"} <= set(records.columns)
    assert set(records["label"].unique()) <= {0.0, 1.0} and (records["kl"] >= 0).all()
    # one reference point per batch: every row of a step records the same z
    assert (records.groupby("step")["kl"].nunique() == 1).all()


def test_kto_on_the_skills_pairs_unpaired(tmp_path):
    summary = run_in_hydra([*FAST, "data.format=unpaired", "objective=kto"], tmp_path)
    assert summary["status"] == "completed" and "test/kl" in summary["metrics"]
