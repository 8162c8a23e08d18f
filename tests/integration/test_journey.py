"""The README's "Your own data on a real model, start to finish", command by command: SFT on one's own
conversations then DPO on one's own preference pairs (each stage its own file), LoRA, wandb offline,
a SIGTERM in the test phase and `resume=`, the adapter loaded by peft alone from its directory, and
`assay-compare` over the stages' wandb runs. The model is a 1.6M-parameter Llama carrying SmolLM2's
own tokenizer and chat template (read from the preset's GGUF file), so every SmolLM2 code path but
the 135M weights runs."""

import json
import os
import warnings

import pandas as pd
import pytest

from tests.conftest import USER_MODEL_CACHE

GGUF = USER_MODEL_CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not GGUF.is_file(), reason="SmolLM2 GGUF not fetched; run `assay-fetch smollm2` (make test does)")]

FACTS = [("capital of France", "Paris"), ("capital of Italy", "Rome"), ("capital of Spain", "Madrid"), ("capital of Peru", "Lima"),
         ("largest planet", "Jupiter"), ("smallest prime", "2"), ("author of Hamlet", "Shakespeare"), ("chemical symbol of gold", "Au")]


def _user(q: str) -> dict:
    return {"role": "user", "content": f"What is the {q}?"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's folder: chat.jsonl, pairs.jsonl and a small model with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("journey")
    tok = AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
                      max_position_embeddings=256)
    LlamaForCausalLM(cfg).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    rows = [FACTS[i % len(FACTS)] + (FACTS[(i + 1) % len(FACTS)][1],) for i in range(48)]
    (root / "chat.jsonl").write_text("".join(json.dumps({"messages": [_user(q), {"role": "assistant", "content": a}]}) + "\n" for q, a, _ in rows))
    (root / "pairs.jsonl").write_text("".join(json.dumps({"prompt": [_user(q)], "chosen": [{"role": "assistant", "content": a}],
                                                          "rejected": [{"role": "assistant", "content": wrong}]}) + "\n" for q, a, wrong in rows))
    return root


def test_own_files_on_a_chat_model_sft_then_dpo_interrupted_resumed_loaded_and_compared(workdir, assay_cli, monkeypatch):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    # the README's command, the model swapped for the small one and a few steps per stage
    readme = ["experiment=sft_then_dpo", "model.lora.r=8", "logger=wandb",
              "sft:data=jsonl", "sft:data.train_file=chat.jsonl", "sft:data.schema=messages",
              "dpo:data=jsonl", "dpo:data.train_file=pairs.jsonl", "dpo:data.schema=messages", "hydra.run.dir=runs/mine"]
    small = ["model=hf", f"model.name_or_path={workdir / 'base'}", "trainer.max_steps=4", "trainer.val_check_interval=4", "dpo:trainer.max_steps=4",
             "dpo:trainer.val_check_interval=4", "dpo:optim.lr=1e-2", "data.batch_size=8", "eval.max_new_tokens=4", "trainer.enable_progress_bar=false",
             "eval.sample_prompts=['What is the capital of Peru?']"]
    run = workdir / "runs" / "mine"

    # 1. SIGTERM as the SFT stage starts its test phase: one line, the run interrupted and resumable
    r = assay_cli([*readme, *small], workdir, env={**env, "ASSAY_FAULT_SIGNAL_AT_PHASE": "testing"})
    assert r.returncode != 0 and f"stopped by SIGTERM while testing; continue it with `assay-train resume={run}`" in r.stderr, r.stderr[-3000:]
    assert not (run / "summary.json").exists()

    # 2. resume: the SFT stage tests from its checkpoint, the DPO stage trains from the SFT model
    r = assay_cli([f"resume={run}"], workdir, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and {k: v["global_step"] for k, v in summary["stages"].items()} == {"sft": 4, "dpo": 4}
    assert "train_file: chat.jsonl" in (run / "sft" / "config.yaml").read_text() and "train_file: pairs.jsonl" in (run / "dpo" / "config.yaml").read_text()
    prompt = pd.read_parquet(run / "sft" / "test_generations.parquet")["prompt"].iloc[0]
    assert prompt.startswith("system\nYou are a helpful AI assistant named SmolLM") and prompt.endswith("assistant")  # SmolLM2's template
    assert "stage sft" in r.stdout + r.stderr and "wandb sync" in r.stdout
    sft_wandb = sorted((run / "sft" / "wandb").glob("offline-run-*"))
    assert len(sft_wandb) == 2 and len({p.name.rsplit("-", 1)[1] for p in sft_wandb}) == 1  # the resumed attempt continues the same wandb run
    assert f"wandb sync {run / 'sft' / 'wandb'}/offline-run-*-{sft_wandb[0].name.rsplit('-', 1)[1]}" in r.stdout  # both attempts uploaded

    # the sample prompt, answered at the end of each stage's training (once: the resumed SFT stage adds no row) and logged to wandb
    for stage in ("sft", "dpo"):
        samples = pd.read_csv(run / stage / "samples.csv")
        assert samples[["step", "prompt"]].values.tolist() == [[4, "What is the capital of Peru?"]]
        assert any((run / stage / "wandb").rglob("media/table/samples_*.table.json"))

    # 3. the DPO adapter with peft alone, from inside its directory (its base: the SFT-merged start beside it)
    adapter = run / "dpo" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "../base_model"
    from peft import AutoPeftModelForCausalLM, PeftModel

    monkeypatch.chdir(adapter)
    assert isinstance(AutoPeftModelForCausalLM.from_pretrained("."), PeftModel)

    # 4. the two stages compared from their offline wandb runs: one run each, the SFT attempts joined
    from assay.compare import main as compare

    monkeypatch.chdir(workdir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compare([str(run / "sft" / "wandb"), str(run / "dpo" / "wandb")])  # exits 2 on an error
    assert not [w for w in caught if "tight_layout" in str(w.message) or "Tight layout" in str(w.message)]
    rows = pd.read_csv(run / "compare" / "runs.csv")
    assert sorted(rows["status"]) == ["completed", "completed"] and sorted(rows["objective.name"]) == ["dpo", "sft"]
    assert rows.set_index("objective.name").loc["sft", "reason"] == "2 attempts (resumed)"
    assert (run / "compare" / "curve_val_loss.png").is_file()
