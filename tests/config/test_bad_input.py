"""Bad input gets one line naming the field, the value and what is allowed; exit 2; no traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_assay as assay_train

FAST = ["debug=fast", "logger=none", "trainer.enable_progress_bar=false"]



def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


CASES = {
    "unknown group option": (["objective=dpoo"], ["objective='dpoo'", "dpo", "sft"]),
    "unknown key": (["objective.bta=0.1"], ["objective.bta", "unknown key"]),
    "wrong type": (["optim.lr=fast"], ["optim.lr", "fast"]),
    "zero learning rate": (["optim.lr=0"], ["optim.lr=0", "must be > 0"]),
    "negative learning rate": (["optim.lr=-1e-3"], ["optim.lr=-0.001", "must be > 0"]),
    "zero batch size": (["data.batch_size=0"], ["data.batch_size=0", "positive integer"]),
    "negative mixture weight": (["mixture=weights", "mixture.weights.copy=-1"], ["mixture.weights.copy=-1.0", ">= 0"]),
    "all-zero mixture weights": (["mixture=weights", "mixture.weights={copy:0,reverse:0,sort:0,count:0,add:0}"], ["mixture.weights", "at least one weight"]),
    "fraction outside (0, 1]": (["selection=random", "selection.selector.fraction=1.5"], ["selection.selector.fraction=1.5", "(0, 1]"]),
    "a selection field that moved": (["selection=random", "selection.fraction=0.5"], ["selection.fraction", "moved to selection.selector.fraction"]),
    "noise outside [0, 0.5)": (["noise=corrupt", "noise.p=0.7"], ["noise.p=0.7", "[0, 0.5)"]),
    "init_from not a run dir": (["model.init_from=/tmp"], ["model.init_from='/tmp'", "run directory"]),
    "objective and data format disagree": (["objective=dpo"], ["data.format='sft'", "data.format=preference"]),
    "gradient dynamics on preference data": (["objective=dpo", "data.format=preference", "dynamics=gradients"], ["dynamics='gradients'", "sft", "dynamics=losses"]),
    "gradient dynamics that record nothing": (["dynamics=gradients", "dynamics.grad_every_n_steps=0"], ["dynamics.grad_every_n_steps=0", "no gradient would be recorded"]),
    "unknown gradient projection": (["dynamics=gradients", "dynamics.projection=gauss"], ["dynamics.projection='gauss'", "sjlt"]),
    "gradient dynamics over no parameter": (["dynamics=gradients", "dynamics.params=[nope]"], ["dynamics.params=['nope']", "match no parameter"]),
    "Dr. DPO global scope in one process": (
        ["objective=dpo", "data.format=preference", "objective/aggregator=dr_dpo", "objective.aggregator.scope=global"],
        ["objective.aggregator.scope='global'", "runs one", "trainer=ddp trainer.devices=2"],
    ),
    "bad value in one sweep job": (["-m", "optim.lr=1e-3,-1"], ["optim.lr=-1.0", "optim.lr=-1"]),
    "infinite learning rate": (["optim.lr=inf"], ["optim.lr=inf", "must be a finite number"]),
    "NaN beta": (["objective=dpo", "data.format=preference", "objective.beta=nan"], ["objective.beta=nan", "must be a finite number"]),
    "infinite beta prime": (["objective=dpo", "data.format=preference", "objective/aggregator=dr_dpo", "objective.aggregator.beta_prime=inf"],
                            ["objective.aggregator.beta_prime=inf", "finite"]),
    "zero epochs": (["trainer.max_epochs=0"], ["trainer.max_epochs=0", "would train nothing"]),
    "an empty sample prompt": (["eval.sample_prompts=['']"], ["eval.sample_prompts", "non-empty prompts"]),
    "no run length": (["trainer.max_steps=null"], ["trainer.max_steps", "give the run's length as one of them"]),
    "LoRA alpha 0": (["model.lora.r=4", "model.lora.alpha=0"], ["model.lora.alpha=0", "trains nothing"]),
    "--cfg job validates what it prints": (["--cfg", "job", "optim.lr=-1"], ["optim.lr=-1.0", "must be > 0"]),
    "per-source metric that is no metric": (["eval.per_source_metrics=[copy]"], ["eval.per_source_metrics='copy'", "is not a metric", "'exact_match'"]),
    "no test examples to generate for": (["eval.max_examples=0"], ["eval.max_examples=0", "must be a positive integer (or null for all)"]),
    "task name outside the log folder": (["task_name=../escape"], ["task_name='../escape'", "plain name"]),
}


@pytest.mark.cli
@pytest.mark.parametrize("name", list(CASES))
def test_config_errors(name, tmp_path):
    args, fragments = CASES[name]
    assert_one_line_error(assay_train([*FAST, *args], tmp_path), *fragments)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.cli
def test_missing_data_file(tmp_path):
    proc = assay_train([*FAST, "data=jsonl", f"data.train_file={tmp_path}/nope.jsonl"], tmp_path)
    assert_one_line_error(proc, "data.train_file", "nope.jsonl", "does not exist")


@pytest.mark.cli
def test_unreadable_data_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": \n not json at all {{{\n')
    proc = assay_train([*FAST, "data=jsonl", f"data.train_file={bad}"], tmp_path)
    assert_one_line_error(proc, "data.train_file", "bad.jsonl", "unreadable")


@pytest.mark.cli
def test_data_file_lacking_columns(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [{"prompt": f"q{i}", "answer": "a"} for i in range(40)])
    proc = assay_train([*FAST, "data=jsonl", f"data.train_file={f}"], tmp_path)
    assert_one_line_error(proc, "data.columns", "['completion']", "format=sft")


@pytest.mark.cli
def test_empty_dataset_after_selection(tmp_path):
    proc = assay_train([*FAST, "selection=random", "selection.selector.count=null", "selection.selector.fraction=0.001"], tmp_path)
    assert_one_line_error(proc, "selection='random'", "kept no examples")
    assert not list(tmp_path.rglob("summary.json"))  # a failed run never leaves a summary


@pytest.mark.cli
def test_a_run_whose_loss_becomes_nan_ends_diverged_not_completed(tmp_path):
    run = tmp_path / "run"
    proc = assay_train([*FAST, "optim.lr=1e30", f"hydra.run.dir={run}"], tmp_path)
    assert_one_line_error(proc, "train/loss=nan", "the run diverged", "optim.lr")
    assert not (run / "summary.json").exists()
    failure = json.loads((run / "failure.json").read_text())
    assert failure["status"] == "diverged" and "non-finite at step" in failure["error"]
