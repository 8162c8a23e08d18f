"""How the model computes: attention kernel, gradient checkpointing, and the FSDP wrap unit."""

import importlib.util

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from assay.errors import UserError
from assay.models.presets import TinyLlama
from assay.trainers import FSDPTrainer, decoder_layer_classes


def tiny(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(config)


def checkpointing(model) -> bool:
    return getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids, use_cache=False)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_recomputes_without_changing_the_gradient():
    ids = torch.randint(1, 40, (3, 17), generator=torch.Generator().manual_seed(1))
    plain = tiny().train()
    ckpt = tiny().train()
    TinyLlama(gradient_checkpointing=True, seed=0).apply_compute_settings(ckpt)
    assert checkpointing(ckpt) and not checkpointing(plain)
    calls = []
    # a pre-hook: the backward's recompute stops once it has what backward needs, inside the MLP
    hook = ckpt.model.layers[0].mlp.register_forward_pre_hook(lambda *a: calls.append(1))
    (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(plain, ids), loss_and_grads(ckpt, ids)
    hook.remove()
    assert len(calls) == 2  # the layer ran again in the backward pass: its activations were not kept
    assert torch.allclose(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for n in grads_a:
        assert torch.allclose(grads_a[n], grads_b[n], atol=1e-6, rtol=1e-5), n


def test_gradient_checkpointing_under_lora_trains_the_adapters():
    cfg = TinyLlama(gradient_checkpointing=True, seed=0)
    cfg.lora.r = 4
    model = tiny()
    cfg.apply_compute_settings(model)
    model = cfg._wrap_lora(model).train()
    ids = torch.randint(1, 40, (2, 9))
    _, grads = loss_and_grads(model, ids)
    assert grads and all("lora_" in n for n in grads)
    # B starts at zero, so only B has a gradient at the first step (dA = Bᵀ·δ·x = 0)
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attention_implementation_is_applied_and_agrees(impl):
    ids = torch.randint(1, 40, (2, 11))
    reference = tiny().eval()
    reference.set_attn_implementation("eager")
    model = tiny().eval()
    TinyLlama(attn_implementation=impl, seed=0).apply_compute_settings(model)
    assert model.config._attn_implementation == impl
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_flash_attention_without_the_package_is_one_line():
    with pytest.raises(UserError) as err:
        TinyLlama(attn_implementation="flash_attention_2", seed=0).apply_compute_settings(tiny())
    assert str(err.value).startswith("model.attn_implementation='flash_attention_2'") and "\n" not in str(err.value)


def test_fsdp_wraps_each_decoder_layer_of_the_built_model():
    from peft import LoraConfig, get_peft_model
    from pytorch_lightning.strategies import FSDPStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    model = tiny()
    assert decoder_layer_classes(model) == {LlamaDecoderLayer}
    lora = get_peft_model(tiny(), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert decoder_layer_classes(lora) == {LlamaDecoderLayer}  # found under the adapters too
    strategy = FSDPTrainer().build_strategy(model)
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy) and set(policy._module_classes) == {LlamaDecoderLayer}
    assert strategy._state_dict_type == "full" and strategy.kwargs["use_orig_params"]
    with pytest.raises(UserError, match="no decoder layer class"):
        decoder_layer_classes(torch.nn.Sequential(torch.nn.Linear(2, 2)))
