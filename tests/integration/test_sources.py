"""The real loading code (``load_dataset``, ``from_pretrained``) on local files of the Hub schemas."""

import json
from pathlib import Path

import pytest

from tests.conftest import run_in_hydra

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false", "logger=none", "trainer.max_steps=2"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def alpaca_rows(n: int) -> list[dict]:
    return [{"instruction": f"Add {i} and {i + 1}.", "input": "" if i % 2 else "Show only the number.", "output": str(2 * i + 1)} for i in range(n)]


def hh_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = f"\n\nHuman: What is {i} plus one?\n\nAssistant:"
        rows.append({"chosen": f"{prompt} It is {i + 1}.", "rejected": f"{prompt} It is {i + 7}."})
    return rows


def ultrafeedback_rows(n: int) -> list[dict]:
    return [
        {
            "prompt": f"Name the number after {i}.",
            "chosen": [{"role": "user", "content": f"Name the number after {i}."}, {"role": "assistant", "content": str(i + 1)}],
            "rejected": [{"role": "user", "content": f"Name the number after {i}."}, {"role": "assistant", "content": str(i + 3)}],
            "score_chosen": 9.0,
            "score_rejected": 2.0,
        }
        for i in range(n)
    ]


def test_hf_sft_alpaca_schema_from_a_local_dataset_dir(tmp_path):
    data_dir = tmp_path / "alpaca"
    write_jsonl(data_dir / "train.jsonl", alpaca_rows(60))
    summary = run_in_hydra([*FAST, "data=hf_sft", f"data.path={data_dir}"], tmp_path / "run")
    assert summary["data"]["source_counts"] == {"alpaca": summary["data"]["train_examples"]}
    assert summary["data"]["val_examples"] > 0 and summary["data"]["test_examples"] > 0


def test_hf_preference_hh_schema(tmp_path):
    data_dir = tmp_path / "hh"
    write_jsonl(data_dir / "train.jsonl", hh_rows(60))
    write_jsonl(data_dir / "test.jsonl", hh_rows(10))
    summary = run_in_hydra([*FAST, "data=hf_preference", f"data.path={data_dir}", "objective=dpo"], tmp_path / "run")
    assert "test/pref_acc" in summary["metrics"]


def test_hf_preference_ultrafeedback_schema_with_split_mapping(tmp_path):
    data_dir = tmp_path / "uf"
    train = write_jsonl(data_dir / "train_prefs.jsonl", ultrafeedback_rows(60))
    test = write_jsonl(data_dir / "test_prefs.jsonl", ultrafeedback_rows(10))
    summary = run_in_hydra(
        [*FAST, "data=hf_preference", "data.path=json", f"data.data_files={{train_prefs:{train},test_prefs:{test}}}",
         "data.schema=ultrafeedback", "data.splits={train:train_prefs,test:test_prefs}", "objective=dpo"],
        tmp_path / "run",
    )
    assert summary["data"]["test_examples"] == 10


def test_jsonl_with_column_mapping_and_ids(tmp_path):
    rows = [{"uid": f"q{i}", "question": f"echo {i}", "reply": f"{i}", "domain": "a" if i % 3 else "b"} for i in range(60)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    summary = run_in_hydra(
        [*FAST, "data=jsonl", f"data.train_file={train}", "data.columns={prompt:question,completion:reply}", "data.source_column=domain"],
        tmp_path / "run",
    )
    assert set(summary["data"]["source_counts"]) == {"a", "b"}


def test_hf_model_from_a_local_path(tmp_path):
    """A finished run's model and tokenizer, saved side by side, load through AutoModelForCausalLM."""
    import shutil

    first = tmp_path / "first"
    run_in_hydra(FAST, first)
    local_model = tmp_path / "local_model"
    shutil.copytree(first / "model", local_model)
    for f in (first / "tokenizer").iterdir():
        shutil.copy(f, local_model / f.name)
    summary = run_in_hydra([*FAST, "model=hf", f"model.name_or_path={local_model}"], tmp_path / "second")
    assert summary["status"] == "completed"


def test_hf_model_missing_offline_is_one_clear_error(tmp_path):
    from assay.errors import UserError

    with pytest.raises(UserError, match="model.name_or_path"):
        run_in_hydra([*FAST, "model=hf", "model.name_or_path=not-a-real-org/not-a-real-model"], tmp_path)
