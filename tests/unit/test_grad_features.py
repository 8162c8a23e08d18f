import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from assay.dynamics.grad_features import _sample_loss, adam_precondition, checkpoint_weights, grad_param_names, per_sample_grads, project


def tiny():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 32, (5, 10), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100  # prompt
    ids[0, 7:], labels[0, 7:] = 0, -100  # a right-padded row
    return ids, labels


@pytest.mark.parametrize("patterns", [(), ("lm_head",), ("layers.0.self_attn.q_proj",)])
def test_batched_per_sample_grads_equal_a_per_example_loop(patterns):
    model, (ids, labels) = tiny(), batch()
    names = grad_param_names(model, patterns)
    g = per_sample_grads(model, ids, labels, names)
    params = dict(model.named_parameters())
    for i in range(len(ids)):
        model.zero_grad()
        _sample_loss(model, params, {}, ids[i], labels[i]).backward()
        ref = torch.cat([params[n].grad.reshape(-1) for n in names])
        torch.testing.assert_close(g[i], ref, atol=1e-6, rtol=1e-5)


def test_padding_does_not_change_a_rows_gradient():
    model, (ids, labels) = tiny(), batch()
    names = grad_param_names(model, ("lm_head",))
    short = per_sample_grads(model, ids[:1, :7], labels[:1, :7], names)
    padded = per_sample_grads(model, ids[:1], labels[:1], names)
    torch.testing.assert_close(short, padded, atol=1e-6, rtol=1e-5)


def test_default_subset_is_lora_or_last_layer():
    model = tiny()
    assert all("layers.1." in n for n in grad_param_names(model))
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    names = grad_param_names(lora)
    assert names and all("lora_" in n for n in names)
    ids, labels = batch()
    assert per_sample_grads(lora, ids, labels, names).shape[0] == 5


def test_projection_is_seeded_and_preserves_inner_products():
    g = torch.randn(6, 3000, generator=torch.Generator().manual_seed(0))
    a, b = project(g, 4096, seed=3, block=1000), project(g, 4096, seed=3, block=1000)
    assert torch.equal(a, b) and not torch.equal(a, project(g, 4096, seed=4, block=1000))
    exact, approx = g @ g.T, a @ a.T
    assert torch.allclose(approx, exact, rtol=0.15, atol=0.15 * exact.diag().mean().item())
    assert torch.allclose(project(g[:2], 4096, 3, 1000), a[:2], atol=1e-5)  # rows are projected independently


def test_adam_preconditioning_formula():
    g, m, v = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.0]), torch.tensor([0.25, 1.0])
    out = adam_precondition(g, m, v)
    m2, v2 = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
    assert torch.allclose(out, m2 / torch.sqrt(v2 + 1e-8))


def test_checkpoint_weights_normalise_learning_rates():
    assert np.allclose(checkpoint_weights([2e-5, 1e-5, 1e-5]), [0.5, 0.25, 0.25])
