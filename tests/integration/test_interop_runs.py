"""A run's outputs taken to the next tool, a user's own chat data end to end, and a quiet console."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import HEAD, REPO, run_in_hydra

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false"]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_model_dir_loads_with_from_pretrained_and_a_pipeline(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    run_in_hydra(FAST, tmp_path)
    model_dir = tmp_path / "model"
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (model_dir / name).is_file(), name
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tokenizer("sort : 7 3 9 =", return_tensors="pt")["input_ids"]
    assert _logits(model, ids).shape == (1, ids.shape[1], len(tokenizer))
    # the command the README shows
    generate = pipeline("text-generation", model=str(model_dir))
    out = generate("sort : 7 3 9 =", min_new_tokens=2, max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert out.startswith("sort : 7 3 9 =") and len(out) > len("sort : 7 3 9 =")
    # the same continuation as generating by hand from the loaded model and tokenizer
    by_hand = model.generate(ids, min_new_tokens=2, max_new_tokens=4, do_sample=False)
    assert out == tokenizer.decode(by_hand[0], skip_special_tokens=True)


def test_lora_runs_save_a_peft_adapter_and_optionally_the_merged_model(tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from assay.models.adapters import load_adapter

    lora = ["model.lora.r=4", "model.lora.target_modules=[q_proj,v_proj]", "optim.lr=0.01"]
    first = tmp_path / "scratch"
    run_in_hydra([*FAST, *lora, "model.save_merged=true"], first)
    adapter = first / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    # a model built from a config exists only in this run: its base weights are saved beside the
    # adapter, which names them relative to itself (the run can move)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "../base_model"
    assert "../base_model" in (adapter / "README.md").read_text() and "load_adapter" in (adapter / "README.md").read_text()
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    ids = tokenizer("copy : k d a m =", return_tensors="pt")["input_ids"]
    merged = AutoModelForCausalLM.from_pretrained(first / "model")
    base = AutoModelForCausalLM.from_pretrained(first / "base_model")
    assert torch.allclose(_logits(load_adapter(adapter), ids), _logits(merged, ids), atol=1e-4)
    assert not torch.allclose(_logits(base, ids), _logits(merged, ids), atol=1e-4)  # the adapter changed something
    with monkeypatch.context() as m:  # peft alone, from inside the adapter directory (as its README says)
        m.chdir(adapter)
        assert torch.allclose(_logits(AutoPeftModelForCausalLM.from_pretrained("."), ids), _logits(merged, ids), atol=1e-4)

    # from an earlier run's weights, adapter only: it points at that run's model/, beside it
    second = tmp_path / "adapter_only"
    run_in_hydra([*FAST, *lora, f"model.init_from={first}"], second)  # the adapter only: the default
    config = json.loads((second / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "../../scratch/model"
    assert not (second / "model").exists() and not (second / "base_model").exists()
    expected = _logits(load_adapter(second / "adapter"), ids)
    # a run starting from that adapter-only run: its adapter merged into its base is where it starts,
    # weights that exist only in the new run, so they are its base_model/
    third = tmp_path / "from_adapter"
    run_in_hydra([*FAST, *lora, f"model.init_from={second}", "trainer.max_steps=1"], third)
    assert json.loads((third / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == "../base_model"
    start = AutoModelForCausalLM.from_pretrained(third / "base_model")
    assert torch.allclose(_logits(start, ids), expected, atol=1e-4)
    # both runs moved together: still loadable, and the same model
    moved = tmp_path / "elsewhere" / "recipe"
    moved.parent.mkdir()
    (moved).mkdir()
    first.rename(moved / "scratch")
    second.rename(moved / "adapter_only")
    assert torch.allclose(_logits(load_adapter(moved / "adapter_only" / "adapter"), ids), expected)
    assert torch.allclose(_logits(load_adapter(moved / "scratch" / "adapter", merge=True), ids), _logits(merged, ids), atol=1e-4)


# Every answer holds a multi-digit number: a decoder that splits digits can never match one.
QA = [
    ("What year did the wall fall?", "1989"),
    ("Largest city of the USA?", "New York 8336817"),
    ("Pi to two decimals?", "3.14"),
    ("Boiling point of water in C?", "100 degrees"),
    ("How many minutes in a day?", "1440"),
    ("Area code of Manhattan?", "212 and 646"),
    ("Year of the moon landing?", "1969 July"),
    ("Square of 12?", "144"),
]


def test_exact_match_on_own_chat_data_with_multi_digit_answers(tmp_path):
    """A user's JSON-lines conversations (messages schema): tiny_llama has no chat template, so the
    plain template is used; training memorises the eight answers and exact match finds them."""
    path = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run_in_hydra(
        ["data=jsonl", f"data.train_file={path}", f"data.val_file={path}", f"data.test_file={path}", "data.schema=messages",
         "data.batch_size=8", "trainer.max_steps=150", "trainer.val_check_interval=150", "trainer.enable_progress_bar=false",
         "optim.lr=0.005", "optim.warmup_steps=10", "eval.max_new_tokens=12", "dynamics=off"],
        tmp_path / "run",
    )
    assert summary["metrics"]["test/exact_match"] >= 0.75, summary["metrics"]


def test_chat_preference_pairs_train_with_dpo(tmp_path):
    user = lambda i: [{"role": "user", "content": f"What is {i} + {i}?"}]  # noqa: E731
    rows = [{"chosen": user(i) + [{"role": "assistant", "content": f"{2 * i}"}], "rejected": user(i) + [{"role": "assistant", "content": f"{2 * i + 1}"}]}
            for i in range(10, 70)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run_in_hydra([*FAST, "objective=dpo", "data=jsonl", "data.format=preference", "data.schema=messages", f"data.train_file={path}",
                            "data.val_fraction=0.1", "data.test_fraction=0.1"], tmp_path / "run")
    assert {"test/pref_acc", "test/reward_margin"} <= set(summary["metrics"])


def test_embedder_column_end_to_end(tmp_path):
    """selection=lava on a precomputed `embedding` column of the user's file."""
    import pandas as pd

    rows = []
    for i in range(60):
        group = i % 2
        rows.append({"question": f"item {i}", "answer": f"{i} {'even' if group == 0 else 'odd'}", "embedding": [float(group), float(i % 5) / 5, 1.0]})
    path = tmp_path / "emb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run_in_hydra([*FAST, "data=jsonl", f"data.train_file={path}", "data.columns={prompt:question,completion:answer}",
                            "data.val_fraction=0.2", "data.test_fraction=0.1", "selection=lava", "selection.embedder=column"], tmp_path / "run")
    selection = pd.read_parquet(tmp_path / "run" / "selection.parquet")
    assert len(selection) == summary["data"]["train_examples"] and 0 < selection["kept"].sum() < len(selection)
    assert (tmp_path / "run" / "ot_values.parquet").is_file()


@pytest.mark.cli
def test_a_fast_run_prints_only_what_a_user_reads_and_logs_the_rest(tmp_path):
    """Also on a SLURM login node: a stand-in ``srun`` on PATH (every cluster machine has one) must
    not bring Lightning's "srun is available but not used" hint onto the console."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "assay.train", "debug=fast", f"hydra.run.dir={run_dir}"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    table = [line for line in printed if line[0] in "┏┃┡│└" or line.strip() == "assay run"]
    rest = [line for line in printed if line not in table]
    assert rest == [f"run directory: {run_dir}"], printed
    assert any("test/exact_match" in line for line in table)
    for noise in ("tokenizing", "srun", "GPU available", "TPU", "litlogger", "Writing model shards", "Epoch", "Warning"):
        assert not any(noise in line for line in printed), noise
    log = (run_dir / "train.log").read_text()
    assert "GPU available: False" in log and "finished: {" in log and "test/exact_match" in log
    # the run names the code, the libraries, the machine and the command it came from
    origin = json.loads((run_dir / "summary.json").read_text())["provenance"]
    assert origin["code"]["commit"] == HEAD and origin["command"][-2:] == ["debug=fast", f"hydra.run.dir={run_dir}"]
    assert origin["machine"]["world_size"] == 1 and origin["versions"]["pytorch-lightning"] and origin["data_order_fingerprint"]
    assert (run_dir / "code.diff").is_file() == bool(origin["code"]["dirty"])
