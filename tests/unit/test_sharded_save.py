"""The final model of a run whose strategy shards parameters is saved from the gathered weights."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer, models

from assay.models.build import save_model
from assay.trainers import gathered_weights


def _tiny():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))


def _tokenizer():
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "a": 1}, unk_token="<pad>")), pad_token="<pad>")


def test_fsdp_weights_are_the_gathered_state_dict_without_the_module_prefix():
    strategy = FSDPStrategy()
    full = {"model.lm_head.weight": torch.ones(2), "model.model.norm.weight": torch.zeros(2), "controller.beta": torch.tensor(1.0)}
    strategy.lightning_module_state_dict = lambda: full  # what FSDP's full-state-dict context returns on rank 0
    got = gathered_weights(SimpleNamespace(strategy=strategy), model=None)
    assert set(got) == {"lm_head.weight", "model.norm.weight"}


def test_unsharded_strategies_gather_nothing():
    assert gathered_weights(SimpleNamespace(strategy=DDPStrategy()), model=None) is None


def test_save_model_writes_the_given_weights_not_the_local_shards(tmp_path):
    model = _tiny()
    gathered = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    save_model(model, _tokenizer(), tmp_path, state_dict=gathered)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert all(torch.equal(v, torch.full_like(v, 0.5)) for v in loaded.state_dict().values())
