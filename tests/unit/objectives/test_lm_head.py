"""Target log-probs through the head chunk by chunk (fused linear + cross-entropy, Liger-Kernel / Cut
Cross-Entropy) equal the full-logits path in values, extras and gradients, and backward keeps no
[M, V] tensor; ``head_parts`` splits a Llama (tied, untied, under LoRA) into body and head weight."""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from assay.objectives.lm_head import CHUNK_BYTES, chunk_rows, head_parts, target_logps
from assay.objectives.logps import log_sum_sq_probs, model_attention_mask, shared_prompt_mask
from tests.unit.objectives.test_shared_prompt import pair_rows, shared

M, H, V = 11, 7, 13


def problem(m=M, h=H, v=V, dtype=torch.float32, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(m, h, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()
    weight = torch.randn(v, h, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    targets = torch.randint(0, v, (m,), generator=g)
    upstream = torch.randn(m, generator=g, dtype=torch.float64)
    return hidden, weight, targets, upstream


def unfused(hidden, weight, targets):
    z = hidden @ weight.T
    z = z if z.dtype == torch.float64 else z.float()
    return z, F.log_softmax(z, -1).gather(1, targets[:, None]).squeeze(1)


# ---- values, extras, gradients -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk", [1, 3, M, M + 5, None])
def test_values_and_gradients_equal_the_full_logits(dtype, chunk):
    hidden, weight, targets, upstream = problem(dtype=dtype)
    out = target_logps(hidden, weight, targets, chunk_size=chunk, want_hits=True, want_sum_sq=True)
    z, ref = unfused(hidden, weight, targets)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    assert out.logps.dtype == (torch.float32 if dtype == torch.float32 else torch.float64) and out.logps.shape == (M,)
    torch.testing.assert_close(out.logps, ref, **tol)
    assert torch.equal(out.hits, z.argmax(-1) == targets) and out.hits.dtype == torch.bool
    # a difference of two logsumexps: its float32 rounding is relative to their size, not to its own
    loose = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else tol
    torch.testing.assert_close(out.log_sum_sq, z.detach().softmax(-1).square().sum(-1).log(), **loose)
    if dtype == torch.float32:
        torch.testing.assert_close(out.log_sum_sq, log_sum_sq_probs(z.detach()), **loose)
    assert not out.hits.requires_grad and not out.log_sum_sq.requires_grad

    u = upstream.to(out.logps.dtype)
    gh, gw = torch.autograd.grad((out.logps * u).sum(), (hidden, weight))
    rh, rw = torch.autograd.grad((ref * u).sum(), (hidden, weight))
    assert gh.dtype == hidden.dtype and gw.dtype == weight.dtype
    torch.testing.assert_close(gh, rh, **tol)
    torch.testing.assert_close(gw, rw, **tol)


def test_extras_are_left_out_unless_asked():
    hidden, weight, targets, _ = problem()
    out = target_logps(hidden, weight, targets)
    assert out.hits is None and out.log_sum_sq is None


def test_hits_see_a_target_that_is_the_argmax():
    """Targets set to the argmax on odd rows and off it on even rows are hits exactly on the odd rows."""
    hidden, weight, _, _ = problem(m=V, h=32, v=V)
    z, _ = unfused(hidden, weight, torch.zeros(V, dtype=torch.long))
    targets = z.argmax(-1)
    targets[::2] = (targets[::2] + 1) % V
    out = target_logps(hidden, weight, targets, chunk_size=4, want_hits=True)
    assert out.hits.tolist() == [i % 2 == 1 for i in range(V)]


def test_empty_rows():
    hidden, weight, targets, _ = problem(m=0)
    out = target_logps(hidden, weight, targets, chunk_size=3, want_hits=True, want_sum_sq=True)
    assert out.logps.shape == (0,) and out.hits.shape == (0,) and out.log_sum_sq.shape == (0,)
    gh, gw = torch.autograd.grad(out.logps.sum(), (hidden, weight), allow_unused=True)
    assert gh.shape == (0, H) and torch.equal(gw, torch.zeros(V, H))


def test_gradcheck_float64():
    hidden, weight, targets, _ = problem(m=5, h=4, v=6, dtype=torch.float64, scale=1.0)
    assert torch.autograd.gradcheck(lambda h, w: target_logps(h, w, targets, chunk_size=2).logps, (hidden, weight))


def test_a_frozen_head_gets_no_gradient_and_hidden_the_right_one():
    hidden, weight, targets, upstream = problem()
    frozen = weight.detach()
    out = target_logps(hidden, frozen, targets, chunk_size=4)
    out.logps.mul(upstream.float()).sum().backward()
    assert frozen.grad is None
    h2 = hidden.detach().requires_grad_()
    unfused(h2, frozen, targets)[1].mul(upstream.float()).sum().backward()
    torch.testing.assert_close(hidden.grad, h2.grad, rtol=1e-6, atol=1e-6)


def test_bfloat16_autocast_matches_the_autocast_head():
    """Under bf16 autocast the matmul runs in bf16 and the log-softmax in float32, as for the model's
    ``nn.Linear`` head followed by ``.float()``; gradients come back in the inputs' float32."""
    hidden, weight, targets, upstream = problem(m=20, h=16, v=50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = target_logps(hidden, weight, targets, chunk_size=6)
        ref = F.log_softmax(F.linear(hidden, weight).float(), -1).gather(1, targets[:, None]).squeeze(1)
    assert out.logps.dtype == torch.float32
    torch.testing.assert_close(out.logps, ref, rtol=1e-5, atol=1e-5)
    gh, gw = torch.autograd.grad((out.logps * upstream.float()).sum(), (hidden, weight))
    rh, rw = torch.autograd.grad((ref * upstream.float()).sum(), (hidden, weight))
    assert gh.dtype == gw.dtype == torch.float32
    torch.testing.assert_close(gh, rh, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gw, rw, rtol=2e-2, atol=2e-2)


def test_backward_saves_no_rows_by_vocab_tensor():
    """At M = 1024, V = 50,000 the full logits are 205 MB in float32; what the fused graph saves for
    backward is hidden, weight, targets and the M log-normalisers. The unfused graph, recorded the
    same way (on the meta device, so nothing is allocated), does save [M, V] tensors: the check sees them."""
    m, h, v = 1024, 8, 50_000
    hidden, weight, targets, _ = problem(m=m, h=h, v=v)
    assert m * v * 4 >= 200e6

    def saved(fn, *args):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            out = fn(*args)
        return sizes, out

    sizes, out = saved(lambda *a: target_logps(*a).logps, hidden, weight, targets)
    assert sorted(sizes) == sorted([m * h, v * h, m, m])
    out.sum().backward()
    assert hidden.grad.shape == (m, h) and weight.grad.shape == (v, h)
    meta = [t.detach().to("meta").requires_grad_(t.requires_grad) for t in (hidden, weight)]
    sizes, _ = saved(lambda *a: unfused(*a)[1], *meta, targets.to("meta"))
    assert max(sizes) == m * v


def test_chunk_rows_keeps_a_chunk_within_the_budget():
    assert chunk_rows(49_152) == CHUNK_BYTES // (4 * 49_152) == 341
    assert chunk_rows(10**9) == 1 and chunk_rows(100, 7) == 7
    with pytest.raises(ValueError):
        chunk_rows(100, 0)


# ---- head_parts on Llama -------------------------------------------------------------------------

VOCAB = 23  # the vocabulary of test_shared_prompt's rows


def llama(tie: bool, attn: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, attn_implementation=attn, tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(cfg).train()


def lora(model, modules=("q_proj", "k_proj", "v_proj", "o_proj")):
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=list(modules), lora_dropout=0.0))
    torch.manual_seed(1)
    for name, p in wrapped.named_parameters():
        if "lora_B" in name:  # B = 0 at initialisation would make the adapters' gradients trivially equal
            torch.nn.init.normal_(p, std=0.1)
    return wrapped


def shared_inputs(model):
    b = shared(pair_rows(5), pack_factor=2.0)
    mask = model_attention_mask(model, shared_prompt_mask(b["segment"], b["part"]))
    kwargs = dict(input_ids=b["input_ids"], attention_mask=mask, position_ids=b["position_ids"], use_cache=False)
    return kwargs, b["target_index"], b["target_ids"]


def padded_inputs(model):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, VOCAB, (3, 9), generator=g)
    attention = torch.ones_like(ids)
    attention[1, 6:] = 0
    attention[2, 4:] = 0
    labels = ids.clone()
    labels[attention == 0] = -100
    labels[:, :2] = -100  # the prompt
    t = labels[:, 1:]
    rows, cols = (t != -100).nonzero(as_tuple=True)
    index = rows * ids.shape[1] + cols  # positions 0..T-2 predict tokens 1..T-1
    return dict(input_ids=ids, attention_mask=attention, use_cache=False), index, t[t != -100]


def fused_and_unfused(model, inputs):
    kwargs, index, targets = inputs(model)
    parts = head_parts(model)
    assert parts is not None
    body, weight = parts
    hidden = body(**kwargs).last_hidden_state
    fused = target_logps(hidden.reshape(-1, hidden.shape[-1])[index], weight, targets, chunk_size=4).logps
    logits = model(**kwargs).logits
    ref = -F.cross_entropy(logits.reshape(-1, logits.shape[-1])[index].float(), targets, reduction="none")
    return fused, ref


def grads_of(model, logps):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(logps.sum(), params)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("inputs", [shared_inputs, padded_inputs], ids=["4d_mask_positions", "2d_mask"])
@pytest.mark.parametrize("adapters", [False, True], ids=["full", "lora"])
def test_head_parts_gives_the_models_log_probs_and_gradients(tie, inputs, adapters):
    model = llama(tie)
    if adapters:
        model = lora(model)
    _, weight = head_parts(model)
    base = model.get_base_model() if adapters else model
    assert weight is base.lm_head.weight
    assert (weight is base.model.embed_tokens.weight) == tie
    assert weight.requires_grad == (not adapters)
    fused, ref = fused_and_unfused(model, inputs)
    assert fused.numel() > 10
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_of(model, fused), grads_of(model, ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_body_of_a_llama_is_its_decoder_with_the_final_norm():
    model = llama(False)
    body, _ = head_parts(model)
    assert body is model.model and body.norm is model.model.norm


def test_no_parts_when_the_head_is_not_a_plain_bias_free_linear():
    assert head_parts(lora(llama(False), ("q_proj", "v_proj", "lm_head"))) is None
    model = llama(False)
    model.lm_head = torch.nn.Linear(32, VOCAB, bias=True)
    assert head_parts(model) is None
    model = llama(False)
    model.lm_head.register_forward_hook(lambda m, i, o: o * 2)
    assert head_parts(model) is None


@pytest.mark.parametrize("name, value", [
    ("final_logit_softcapping", 30.0), ("logits_scaling", 4.0), ("logit_scale", 0.0625),
])
def test_no_parts_when_the_config_rescales_the_logits(name, value):
    model = llama(False)
    setattr(model.config, name, value)
    assert head_parts(model) is None
    setattr(model.config, name, None)
    assert head_parts(model) is not None


def test_no_parts_when_the_causal_lm_holds_more_than_body_and_head():
    model = llama(False)
    model.register_buffer("final_logits_bias", torch.zeros(1, VOCAB))
    assert head_parts(model) is None
    model = llama(False)
    model.norm = torch.nn.LayerNorm(32)
    assert head_parts(model) is None


def test_head_parts_under_eager_attention_with_its_additive_4d_mask():
    model = llama(False, attn="eager")
    fused, ref = fused_and_unfused(model, shared_inputs)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_of(model, fused), grads_of(model, ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
