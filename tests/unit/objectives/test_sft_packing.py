"""Padding-free packing of SFT batches: the examples of a right-padded batch packed whole into rows,
each attending only to itself with its own positions, give the log-probs, loss, metrics and
gradients of one example per padded row."""

import pytest
import torch

from assay.data.collate import Collator
from assay.errors import UserError
from assay.objectives.logps import packed_layout, sequence_logps
from assay.objectives.losses.sft import SFT
from tests.unit.objectives.test_shared_prompt import VOCAB, tiny_model


def sft_rows(n: int = 9, seed: int = 0, empty_prompt: bool = False) -> list[dict]:
    """Examples of varied prompt and completion lengths, so the padded batch wastes slots and the
    packed rows hold several examples."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda k: torch.randint(3, VOCAB, (k,), generator=g).tolist()  # noqa: E731
    rows = []
    for i in range(n):
        p = 0 if (empty_prompt and i == 0) else 1 + (i * 5) % 7
        rows.append({"id": str(i), "_row": i, "source": "s", "answer": "", "prompt_ids": rand(p), "completion_ids": rand(1 + (i * 3) % 6)})
    return rows


def batch(rows):
    return Collator(0, "sft", with_generation=False)(rows)


def test_layout_hand_checked():
    """Lengths 3, 1, 2 at pack factor 2 (rows of at most 6): first fit, longest first, puts all
    three in one row in batch order: sequence 0 at slots 0-2, 1 at 3, 2 at 4-5."""
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    layout = packed_layout(mask, 2.0)
    t = 3
    assert layout["source"].tolist() == [0, 1, 2, t, 2 * t, 2 * t + 1]
    assert layout["position_ids"].tolist() == [[0, 1, 2, 0, 0, 1]]
    assert layout["segment"].tolist() == [[0, 0, 0, 1, 2, 2]]
    assert layout["start"].tolist() == [0, 3, 4]
    # at pack factor 1 (rows of at most the longest, 3): [0], then [1, 2] share a row
    one = packed_layout(mask, 1.0)
    assert one["segment"].tolist() == [[0, 0, 0], [1, 2, 2]] and one["start"].tolist() == [0, 3, 4]


def test_left_padding_is_refused():
    with pytest.raises(ValueError, match="right-padded"):
        packed_layout(torch.tensor([[0, 1, 1], [1, 1, 1]]), 2.0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("pack_factor", [1.0, 2.0, 8.0])
def test_packed_logps_equal_one_example_per_row(attn, pack_factor):
    model = tiny_model(attn)
    b = batch(sft_rows(9))
    plain = sequence_logps(model, b["input_ids"], b["attention_mask"], b["labels"], wpo=True)
    packed = sequence_logps(model, b["input_ids"], b["attention_mask"], b["labels"], wpo=True, pack_factor=pack_factor)
    assert torch.allclose(packed.sum, plain.sum, atol=1e-5, rtol=0), (packed.sum - plain.sum).abs().max()
    assert torch.equal(packed.count, plain.count) and torch.equal(packed.mask, plain.mask)
    assert torch.allclose(packed.token_logps, plain.token_logps, atol=1e-5, rtol=0)
    assert torch.allclose(packed.mean_prob, plain.mean_prob, atol=1e-6)
    assert torch.equal(packed.token_acc, plain.token_acc) and torch.equal(packed.correct, plain.correct)
    assert torch.allclose(packed.wpo_mean, plain.wpo_mean, atol=1e-5)


def test_empty_prompt_scores_the_same_tokens():
    model = tiny_model()
    b = batch(sft_rows(5, empty_prompt=True))
    plain = sequence_logps(model, b["input_ids"], b["attention_mask"], b["labels"])
    packed = sequence_logps(model, b["input_ids"], b["attention_mask"], b["labels"], pack_factor=2.0)
    assert torch.equal(packed.count, plain.count) and torch.allclose(packed.sum, plain.sum, atol=1e-5, rtol=0)


def test_sft_loss_metrics_and_gradients_unchanged():
    b = batch(sft_rows(10, seed=1))
    results = {}
    for factor in (0.0, 2.0):
        model = tiny_model()
        obj = SFT(pack_factor=factor)
        out = obj.compute(model, b, training=True)
        loss = obj.aggregate(out)
        loss.backward()
        results[factor] = (loss.detach(), out, {n: p.grad.clone() for n, p in model.named_parameters()})
    (l0, o0, g0), (l2, o2, g2) = results[0.0], results[2.0]
    assert torch.allclose(l0, l2, atol=1e-6)
    for key in o0.metrics:
        assert torch.allclose(o0.metrics[key], o2.metrics[key], atol=1e-5), key
    for n in g0:
        assert torch.allclose(g0[n], g2[n], atol=1e-6, rtol=1e-4), n


def test_packing_is_the_sft_default_and_refuses_a_negative_factor():
    assert SFT().pack_factor == 2.0 and SFT().custom_attention_mask and not SFT(pack_factor=0).custom_attention_mask
    with pytest.raises(UserError, match="objective.pack_factor"):
        SFT(pack_factor=-1)


def test_flash_attention_model_names_the_setting():
    model = tiny_model()
    model.config._attn_implementation = "flash_attention_2"
    b = batch(sft_rows(3))
    with pytest.raises(UserError, match="objective.pack_factor=0"):
        sequence_logps(model, b["input_ids"], b["attention_mask"], b["labels"], pack_factor=2.0)


@pytest.mark.parametrize("fused", [False, True])
def test_head_on_scored_positions_only_gives_the_full_logits_results(monkeypatch, fused):
    """The lm head sees only the positions that predict a scored token, plainly or chunked
    (``FUSED_HEAD_ABOVE`` = 0 forces the chunked head): the same log-probs, WPO terms and gradients as
    the model's own full logits."""
    from assay.objectives import logps

    b = batch(sft_rows(8, seed=2))
    model = tiny_model()
    monkeypatch.setattr(logps, "head_parts", lambda m: None)  # the model's full logits
    full = sequence_logps(model, b["input_ids"], b["attention_mask"], b["labels"], wpo=True, pack_factor=2.0)
    full.sum.sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    monkeypatch.undo()
    if fused:
        monkeypatch.setattr(logps, "FUSED_HEAD_ABOVE", 0)
    got = sequence_logps(model, b["input_ids"], b["attention_mask"], b["labels"], wpo=True, pack_factor=2.0)
    got.sum.sum().backward()
    assert torch.allclose(got.token_logps, full.token_logps, atol=1e-5, rtol=0)
    assert torch.equal(got.correct, full.correct) and torch.allclose(got.wpo_mean, full.wpo_mean, atol=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, want[n], atol=1e-6, rtol=1e-4), n
