from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import assay.models.grads as grads
import assay.models.projection as pj
from assay.dynamics.checkpoints import checkpoint_weights
from assay.models.grads import _sample_loss, adam_precondition, feature_rows, gradient_features, grad_param_names, per_sample_grads
from assay.models.projection import project


def tiny(tie=False):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg)


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 32, (5, 10), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100  # prompt
    ids[0, 7:], labels[0, 7:] = 0, -100  # a right-padded row
    return ids, labels


def loop_grads(model, ids, labels, names):
    """The reference: one forward + backward per example."""
    params, out = dict(model.named_parameters()), []
    for i in range(len(ids)):
        model.zero_grad()
        _sample_loss(model, params, {}, ids[i], labels[i]).backward()
        out.append(torch.cat([params[n].grad.reshape(-1) if params[n].grad is not None else torch.zeros(params[n].numel()) for n in names]))
    return torch.stack(out)


@pytest.fixture
def no_vmap(monkeypatch):
    """The module taps must account for every parameter: the whole-model vmap is not reached."""
    monkeypatch.setattr(grads, "_vmap_grads", lambda *a: pytest.fail(f"fell back to vmap for {a[3]}"))


@pytest.mark.parametrize(
    "patterns, tie",
    [((), False), (("lm_head",), False), (("layers.0.self_attn.q_proj",), False), (("norm",), False), (("embed_tokens",), True), (("layers.0.",), True)],
)
def test_batched_per_sample_grads_equal_a_per_example_loop(patterns, tie, no_vmap):
    # norms are taken by replaying their module; a tied embedding adds its lm_head use to its lookup use
    model, (ids, labels) = tiny(tie), batch()
    names = grad_param_names(model, patterns)
    torch.testing.assert_close(per_sample_grads(model, ids, labels, names), loop_grads(model, ids, labels, names), atol=1e-6, rtol=1e-5)


def test_lora_adapters_per_sample_grads_equal_the_loop(no_vmap):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p)  # B = 0 at init would zero every lora_A gradient
    (ids, labels), names = batch(), grad_param_names(model)
    g = per_sample_grads(model, ids, labels, names)
    assert g[:, : model.get_parameter(names[0]).numel()].abs().sum() > 0
    torch.testing.assert_close(g, loop_grads(model, ids, labels, names), atol=1e-6, rtol=1e-5)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)  # flags restored


def test_taps_equal_the_vmap_path_and_leave_the_model_as_it_was():
    model, (ids, labels) = tiny(), batch()
    names = grad_param_names(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.get_parameter("model.embed_tokens.weight").requires_grad_(False)
    flags["model.embed_tokens.weight"] = False
    taps = per_sample_grads(model, ids, labels, names)
    torch.testing.assert_close(taps, per_sample_grads(model, ids, labels, names, method="vmap"), atol=1e-6, rtol=1e-5)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())  # no parameter gradient is accumulated
    out = torch.full_like(taps, float("nan"))
    assert per_sample_grads(model, ids, labels, names, out=out) is out and torch.equal(out, taps)


class Shortcut(torch.nn.Module):
    """A toy LM whose ``mix.weight`` is also used by code outside ``mix``'s forward."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.mix, self.head = torch.nn.Embedding(32, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 32)

    def forward(self, input_ids, use_cache=False):
        h = self.emb(input_ids)
        return SimpleNamespace(logits=self.head(torch.tanh(self.mix(h)) + h @ self.mix.weight))


def test_a_parameter_used_outside_its_module_falls_back_to_vmap():
    model, (ids, labels) = Shortcut(), batch()
    names = ["mix.weight", "mix.bias", "head.weight"]
    with pytest.warns(UserWarning, match="mix.weight"):
        g = per_sample_grads(model, ids, labels, names)
    torch.testing.assert_close(g, loop_grads(model, ids, labels, names), atol=1e-6, rtol=1e-5)


class Gathered(torch.nn.Module):
    """A toy LM whose ``expert`` sees the batch's tokens flattened and reordered (as MoE routing does)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.expert, self.head = torch.nn.Embedding(32, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 32)

    def forward(self, input_ids, use_cache=False):
        h = self.emb(input_ids)
        flat = h.reshape(-1, h.shape[-1]).flip(0)
        y = self.expert(flat).flip(0).reshape(h.shape)
        return SimpleNamespace(logits=self.head(h + torch.tanh(y)))


def test_feature_rows_is_the_pipeline_of_both_recorder_and_scorers():
    # Chunks of 2 rows through one reused buffer: plain norms, then Adam direction, then projection,
    # the same numbers as the steps taken one by one; the model's mode is restored.
    model, (ids, labels) = tiny(), batch()
    names = grad_param_names(model)
    exact = loop_grads(model, ids, labels, names)
    m, v = torch.rand(exact.shape[1]), torch.rand(exact.shape[1])
    buffer = torch.empty(2, exact.shape[1])
    model.train()
    rows = list(feature_rows(model, ids, labels, names, 2, proj_dim=16, seed=3, adam=(m, v, (0.8, 0.99)), projection="rademacher", buffer=buffer))
    assert model.training and [len(n) for n, _ in rows] == [2, 2, 1]
    torch.testing.assert_close(torch.cat([n for n, _ in rows]), exact.norm(dim=1), atol=1e-5, rtol=1e-5)
    want = project(adam_precondition(exact, m, v, betas=(0.8, 0.99)), 16, 3, kind="rademacher")
    torch.testing.assert_close(torch.cat([g for _, g in rows]), want, atol=1e-4, rtol=1e-4)


def test_a_module_that_mixes_rows_falls_back_to_vmap():
    model, (ids, labels) = Gathered(), batch()
    names = ["expert.weight", "head.weight"]
    with pytest.warns(UserWarning, match="no leading batch dimension"):
        g = per_sample_grads(model, ids, labels, names)
    torch.testing.assert_close(g, loop_grads(model, ids, labels, names), atol=1e-6, rtol=1e-5)


def test_gradient_features_match_per_sample_grads():
    model, (ids, labels) = tiny(), batch()
    ends = [7, 10, 10, 10, 10]  # row 0 is right-padded after 7 tokens
    ds = datasets.Dataset.from_dict({"prompt_ids": [i[:4].tolist() for i in ids], "completion_ids": [i[4:e].tolist() for i, e in zip(ids, ends)]})
    names = grad_param_names(model)
    exact = gradient_features(model, ds, 0, names, batch_size=2)
    torch.testing.assert_close(exact, loop_grads(model, ids, labels, names), atol=1e-6, rtol=1e-5)
    for kind in pj.PROJECTIONS:
        torch.testing.assert_close(gradient_features(model, ds, 0, names, batch_size=2, proj_dim=64, seed=5, projection=kind), project(exact, 64, 5, kind=kind), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="projection"):
        gradient_features(model, ds, 0, names, proj_dim=8, projection="gaussian")


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


@pytest.mark.parametrize("kind", ["rademacher", "sjlt"])
def test_projection_is_seeded_and_preserves_inner_products(kind):
    g = torch.randn(6, 3000, generator=torch.Generator().manual_seed(0))
    a, b = project(g, 4096, seed=3, block=1000, kind=kind), project(g, 4096, seed=3, block=1000, kind=kind)
    assert torch.equal(a, b) and not torch.equal(a, project(g, 4096, seed=4, block=1000, kind=kind))
    exact, approx = g @ g.T, a @ a.T
    assert torch.allclose(approx, exact, rtol=0.15, atol=0.15 * exact.diag().mean().item())
    assert torch.allclose(project(g[:2], 4096, 3, 1000, kind=kind), a[:2], atol=1e-5)  # rows are projected independently


@pytest.mark.parametrize("kind", ["rademacher", "sjlt"])
def test_projected_inner_products_are_unbiased_with_the_jl_variance(kind):
    # E<Px, Py> = <x, y>; Var = (|x|^2 |y|^2 + <x,y>^2 - 2 sum x_i^2 y_i^2) / k for both maps
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 500, generator=gen, dtype=torch.float64)
    x[1] = 0.6 * x[0] + 0.8 * x[1]
    k, seeds = 32, 400
    est = torch.tensor([(lambda p: (p[0] @ p[1]).item())(project(x, k, s, kind=kind).double()) for s in range(seeds)])
    exact = (x[0] @ x[1]).item()
    var = ((x[0] @ x[0]) * (x[1] @ x[1]) + exact**2 - 2 * (x[0] ** 2 * x[1] ** 2).sum()).item() / k
    assert abs(est.mean().item() - exact) < 4 * (var / seeds) ** 0.5
    assert 0.75 < est.var().item() / var < 1.3


def test_rademacher_cache_gives_the_regenerated_matrix(monkeypatch):
    g = torch.randn(3, 2500, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(pj, "_rademacher_cache", pj.OrderedDict())
    monkeypatch.setattr(pj, "RADEMACHER_CACHE_MIB", 0)  # nothing kept: blocks regenerated per call
    fresh = project(g, 256, seed=7, block=1000)
    assert not pj._rademacher_cache
    monkeypatch.setattr(pj, "RADEMACHER_CACHE_MIB", 1)  # 2500 x 256 fits as int8 signs, not as float32
    assert torch.equal(project(g, 256, seed=7, block=1000), fresh) and torch.equal(project(g, 256, seed=7, block=1000), fresh)
    assert [b.dtype for b in next(iter(pj._rademacher_cache.values()))] == [torch.int8] * 3
    monkeypatch.setattr(pj, "RADEMACHER_CACHE_MIB", 64)
    pj._rademacher_cache.clear()
    assert torch.equal(project(g, 256, seed=7, block=1000), fresh) and torch.equal(project(g, 256, seed=7, block=1000), fresh)
    assert next(iter(pj._rademacher_cache.values()))[0].dtype == torch.float32
    with pytest.raises(ValueError, match="projection"):
        project(g, 8, 0, kind="gaussian")


def test_adam_preconditioning_formula():
    g, m, v = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.0]), torch.tensor([0.25, 1.0])
    out = adam_precondition(g, m, v)
    assert torch.equal(g, torch.tensor([1.0, -2.0]))  # the gradient itself is left as it was
    m2, v2 = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
    assert torch.allclose(out, m2 / torch.sqrt(v2 + 1e-8))


def test_checkpoint_weights_normalise_learning_rates():
    assert np.allclose(checkpoint_weights([2e-5, 1e-5, 1e-5]), [0.5, 0.25, 0.25])
