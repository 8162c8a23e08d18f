"""FedBiOT (assay.collab.fedbiot) on toys: the authors' layer-drop selection, the distillation loss,
one alignment step, the plug-in of the emulator's adapter into the full model, the clients' proximal
term, the client-memory count and the bad-input lines."""

import math

import numpy as np
import pytest
import torch

from assay.collab.emulator import (align, build_emulator, distill_loss, emulator_layer_indices, emulator_size, gap_kl, gap_l2, rename_layers,
                                   restrict_to_adapter)
from assay.collab.fedbiot import FedBiOT, proximal_penalty
from assay.collab.local import client_memory_bytes, load_trainable, trainable_state
from assay.collab.rules import rule_of
from assay.errors import UserError


def _tiny(layers: int = 6, lora: bool = True):
    """A 6-layer Llama (hidden 8) with LoRA r=2 on q/v whose B factors are non-zero (a trained adapter)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=13, hidden_size=8, intermediate_size=16, num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=32, tie_word_embeddings=True, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    if lora:
        model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)
    return model.eval()


IDS = torch.tensor([[1, 5, 7, 2, 9], [3, 3, 11, 4, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])


def test_layer_drop_keeps_the_authors_layers():
    # K = round(n (1 - drop)); indices int(i (n - 1) / (K - 1))
    assert emulator_size(30, 0.2) == 24 and emulator_size(30, 0.5) == 15  # the paper's dp2 / dp5 on emu_r = 30
    assert emulator_layer_indices(6, 4) == [0, 1, 3, 5]  # stride 5/3: 0, 1.67, 3.33, 5
    assert emulator_layer_indices(10, 5) == [0, 2, 4, 6, 9]  # stride 9/4: 0, 2.25, 4.5, 6.75, 9
    idx = emulator_layer_indices(30, 24)  # stride 29/23
    assert len(idx) == 24 and idx[:6] == [0, 1, 2, 3, 5, 6] and idx[-1] == 29
    assert emulator_layer_indices(4, 1) == [0] and emulator_layer_indices(4, 4) == [0, 1, 2, 3]
    assert emulator_size(5, 0.5) == 2 and emulator_size(3, 0.9) == 1  # round(2.5) = 2 (Python's round); at least one


def test_gaps_against_hand_derived_numbers():
    t = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    s = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])
    # mean((t - s)^2) = (0 + 1 + 0 + 1) / 4 = 0.5; mean(t^2) = 30 / 4 = 7.5
    assert float(gap_l2(t, s)) == pytest.approx(0.5 / 7.5)
    # position 1: teacher p = (1/4, 3/4), student q = (1/2, 1/2); position 2: equal logits, KL 0; / (1 x 2)
    tl = torch.tensor([[[0.0, math.log(3.0)], [1.0, 2.0]]])
    sl = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert float(gap_kl(tl, sl)) == pytest.approx(kl / 2, rel=1e-5)


def test_emulator_is_the_selected_layers_and_its_loss_the_normalised_gap():
    full = _tiny()
    restrict_to_adapter(full, 2)
    assert {n for n, p in full.named_parameters() if p.requires_grad} == {n for n, _ in full.named_parameters() if "lora_" in n and (".layers.4." in n or ".layers.5." in n)}
    emu = build_emulator(full, 2, 0.5)  # 4 layers below the adapter -> K = 2: layers 0 and 3
    assert emu.source == [0, 3, 4, 5] and emu.kept == 2 and emu.teacher_layers == 4
    assert emu.model.get_base_model().config.num_hidden_layers == 4
    fp, ep = dict(full.named_parameters()), dict(emu.model.named_parameters())
    for j, src in enumerate(emu.source):
        for n in ep:
            if f".layers.{j}." in n:
                assert torch.equal(ep[n], fp[n.replace(f".layers.{j}.", f".layers.{src}.")]), n
    assert sorted(n for n, p in ep.items() if p.requires_grad) == sorted(rename_layers({n: 0 for n, p in fp.items() if p.requires_grad}, {4: 2, 5: 3}))

    # gap_L2 is between the teacher's layer-3 output (hidden state 4) and the emulator's layer-1 output (hidden state 2)
    with torch.no_grad():
        ht = full(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
        he = emu.model(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
        t, s = ht.hidden_states[4].double().numpy(), he.hidden_states[2].double().numpy()
        lt, ls = ht.logits.double(), he.logits.double()
        kl = (torch.softmax(lt, -1) * (torch.log_softmax(lt, -1) - torch.log_softmax(ls, -1))).sum().item() / 10  # 2 x 5 positions
        loss = distill_loss(full, emu, IDS, MASK, kd_weight=0.9)
    assert float(loss) == pytest.approx(((t - s) ** 2).mean() / (t**2).mean() + 0.9 * kl, rel=1e-4)
    assert not np.allclose(t, s)

    # nothing dropped: the emulator is the full model, both gaps vanish
    same = build_emulator(full, 2, 0.0)
    assert same.source == list(range(6))
    with torch.no_grad():
        assert float(distill_loss(full, same, IDS, MASK, kd_weight=0.9)) == pytest.approx(0.0, abs=1e-6)


def test_one_alignment_step_is_sgd_on_the_compressed_layers_only():
    full = _tiny()
    restrict_to_adapter(full, 2)
    emu = build_emulator(full, 2, 0.5)
    before = {n: p.detach().clone() for n, p in emu.model.named_parameters()}
    compressed = {n: p for n, p in emu.model.named_parameters() if any(f".layers.{j}." in n for j in (0, 1)) and "lora_" not in n}
    for p in compressed.values():
        p.requires_grad_(True)
    loss = distill_loss(full, emu, IDS, MASK, kd_weight=0.9)
    grads = torch.autograd.grad(loss, list(compressed.values()), allow_unused=True)
    for p in compressed.values():
        p.requires_grad_(False)
    mean = align(full, emu, iter([{"input_ids": IDS, "attention_mask": MASK}]), 1, 0.01, 0.9)
    assert mean == pytest.approx(float(loss), rel=1e-5)
    for n, p in emu.model.named_parameters():
        if n in compressed:
            g = grads[list(compressed).index(n)]
            expected = before[n] - 0.01 * (g if g is not None else 0.0)
            torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)
        else:  # embeddings, norm, head, the adapter (and the dead LoRA factors below it) stay
            assert torch.equal(p.detach(), before[n]), n
    assert any(not torch.equal(p.detach(), before[n]) for n, p in compressed.items())
    assert {n for n, p in emu.model.named_parameters() if p.requires_grad} == {n for n, _ in emu.model.named_parameters() if "lora_" in n and (".layers.2." in n or ".layers.3." in n)}


def test_the_trained_adapter_plugs_into_the_full_model():
    full = _tiny()
    restrict_to_adapter(full, 2)
    before = {n: p.detach().clone() for n, p in full.named_parameters()}
    emu = build_emulator(full, 2, 0.5)
    with torch.no_grad():  # a "trained" adapter on the emulator
        for n, p in emu.model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    adapter = emu.adapter_state()
    assert all(".layers.4." in k or ".layers.5." in k for k in adapter) and set(adapter) == set(trainable_state(full))
    load_trainable(full, adapter)
    # the full model's adapter layers now compute what the emulator's adapter layers compute
    h = torch.randn(2, 5, 8)
    base_f, base_e = full.get_base_model().model, emu.model.get_base_model().model
    pos = base_f.rotary_emb(h, torch.arange(5)[None])
    with torch.no_grad():
        for full_layer, emu_layer in ((4, 2), (5, 3)):
            out_f = base_f.layers[full_layer](h, position_embeddings=pos)
            out_e = base_e.layers[emu_layer](h, position_embeddings=pos)
            out_f, out_e = (o[0] if isinstance(o, tuple) else o for o in (out_f, out_e))
            torch.testing.assert_close(out_f, out_e)
        # and the effective weight is W + s B A with the emulator's factors (s = alpha / r = 2)
        q_f = base_f.layers[5].self_attn.q_proj
        q_e = base_e.layers[3].self_attn.q_proj
        w = q_e.base_layer.weight + 2.0 * q_e.lora_B["default"].weight @ q_e.lora_A["default"].weight
        x = torch.randn(3, 8)
        torch.testing.assert_close(q_f(x), x @ w.T)
    # the plug-in changed exactly the adapter's factors, to the emulator's (layer 2 -> 4, 3 -> 5)
    emu_params = dict(emu.model.named_parameters())
    for n, p in full.named_parameters():
        if n in adapter:
            assert torch.equal(p.detach(), emu_params[n.replace(".layers.4.", ".layers.2.").replace(".layers.5.", ".layers.3.")]) and not torch.equal(p.detach(), before[n]), n
        else:
            assert torch.equal(p.detach(), before[n]), n


def test_proximal_term_and_client_memory_count():
    lin = torch.nn.Linear(3, 2)
    lin.bias.requires_grad_(False)
    pen = proximal_penalty(lin, 0.5)
    with torch.no_grad():
        lin.weight.add_(torch.tensor([[1.0, 0.0, -2.0], [0.0, 0.5, 0.0]]))
    assert float(pen()) == pytest.approx(0.5 * (1 + 4 + 0.25))
    assert proximal_penalty(lin, 0.0) is None
    # 6 + 2 float32 parameters = 32 bytes, plus gradient and two Adam moments of the 6 trainable ones: 3 x 24
    assert client_memory_bytes(lin) == 32 + 72
    full = _tiny()
    restrict_to_adapter(full, 2)
    emu = build_emulator(full, 2, 0.5)
    dropped = sum(p.numel() * 4 for n, p in full.named_parameters() if ".layers.1." in n or ".layers.2." in n)
    assert client_memory_bytes(full) - client_memory_bytes(emu.model) == dropped  # same adapter, two layers fewer


@pytest.mark.parametrize("node,fragment", [
    ({"name": "fedbiot", "drop_ratio": -0.5}, "collab.aggregation.drop_ratio=-0.5: must be in [0, 1): a negative ratio asks for an emulator with more layers than the model"),
    ({"name": "fedbiot", "adapter_layers": 0}, "collab.aggregation.adapter_layers=0: must be an integer >= 1"),
    ({"name": "fedbiot", "align_steps": -1}, "collab.aggregation.align_steps=-1: must be an integer >= 0"),
])
def test_bad_fedbiot_options_are_one_line(node, fragment):
    with pytest.raises(UserError) as e:
        rule_of(node)
    assert "\n" not in str(e.value) and fragment in str(e.value)


def test_an_emulator_or_adapter_that_does_not_fit_is_one_line():
    full = _tiny()
    with pytest.raises(UserError, match=r"adapter_layers=6: the model has 6 decoder layers: the adapter takes the last adapter_layers and leaves at least one") as e:
        FedBiOT(adapter_layers=6).prepare_model(full)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"an emulator of 5 layers cannot stand for the 4 layers below the adapter") as e:
        emulator_layer_indices(4, 5)
    assert "\n" not in str(e.value)
    restrict_to_adapter(full, 2)
    emu = build_emulator(full, 2, 0.5)
    adapter = trainable_state(full)
    with pytest.raises(UserError, match=r"does not fit the emulator: it has layers \[3\], the emulator's adapter is layers \[4, 5\]") as e:
        emu.load_adapter(rename_layers(adapter, {4: 3, 5: 5}))  # an adapter of the last 3 layers' numbering
    assert "\n" not in str(e.value)
    key = next(k for k in adapter if "lora_A" in k)
    with pytest.raises(UserError, match=r"does not fit the emulator: .*lora_A.* \[4, 8\] vs \[2, 8\]") as e:
        emu.load_adapter({**adapter, key: np.zeros((4, 8), np.float32)})  # a rank-4 adapter for a rank-2 emulator
    assert "\n" not in str(e.value)
