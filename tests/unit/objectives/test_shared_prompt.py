"""Prefix sharing (Wang et al. 2024, arXiv 2410.20305): one ``prompt + chosen + rejected`` sequence
per pair gives the log-probs, DPO loss and gradients of two ``prompt + response`` sequences."""

import datasets
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from assay.data.collate import CHOSEN, PAD, PROMPT, REJECTED, Collator, pack_first_fit
from assay.errors import UserError
from assay.objectives import reference
from assay.objectives.losses.dpo import DPO
from assay.objectives.logps import model_attention_mask, pair_logps, shared_prompt_mask

VOCAB = 23


def tiny_model(attn: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, attn_implementation=attn,
    )
    return LlamaForCausalLM(cfg).train()


def pair_rows(n: int = 9, seed: int = 0, empty_prompt: bool = False) -> list[dict]:
    """Pairs of varied prompt and response lengths (so rows pad, and segments pack unevenly)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda k: torch.randint(3, VOCAB, (k,), generator=g).tolist()  # noqa: E731
    rows = []
    for i in range(n):
        p = 0 if (empty_prompt and i == 0) else 1 + (i * 5) % 7
        c, r = 1 + (i * 3) % 6, 1 + (i * 2) % 5
        rows.append({
            "id": str(i), "_row": i, "source": "s", "answer": "", "prompt_ids": rand(p), "chosen_ids": rand(c), "rejected_ids": rand(r),
            "ref_chosen_logps": -float(i + 1), "ref_rejected_logps": -float(i + 2),
        })
    return rows


def two_sequences(rows):
    return Collator(0, "preference", with_generation=False)(rows)


def shared(rows, pack_factor=0.0):
    return Collator(0, "preference", with_generation=False, share_prompt=True, pack_factor=pack_factor)(rows)


# ---- layout --------------------------------------------------------------------------------------


def test_layout_positions_roles_and_targets_hand_checked():
    """Prompt [5, 6], chosen [7, 2], rejected [8, 9, 2] → row [5 6 7 2 8 9 2]; the rejected tokens take
    positions 2, 3, 4 (continuing the prompt). Targets: chosen 7 from position 1, 2 from 2; rejected
    8 from position 1 (the prompt's end, not the chosen 2 at position 3), 9 from 4, 2 from 5."""
    rows = [{"id": "a", "_row": 0, "source": "s", "prompt_ids": [5, 6], "chosen_ids": [7, 2], "rejected_ids": [8, 9, 2]}]
    b = shared(rows)
    assert b["input_ids"].tolist() == [[5, 6, 7, 2, 8, 9, 2]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 2, 3, 4]]
    assert b["part"].tolist() == [[PROMPT, PROMPT, CHOSEN, CHOSEN, REJECTED, REJECTED, REJECTED]]
    assert b["target_index"].tolist() == [1, 2, 1, 4, 5]
    assert b["target_ids"].tolist() == [7, 2, 8, 9, 2]
    assert b["target_seq"].tolist() == [0, 0, 1, 1, 1]  # pair 0's chosen is sequence 0, its rejected B + 0 = 1
    allowed = shared_prompt_mask(b["segment"], b["part"])[0, 0]
    assert allowed[4].tolist() == [True, True, False, False, True, False, False]  # first rejected: prompt + itself
    assert allowed[3].tolist() == [True, True, True, True, False, False, False]  # last chosen: prompt + chosen


def test_packing_keeps_segments_apart_and_every_token_placed():
    rows = pair_rows(12)
    b = shared(rows, pack_factor=2.0)
    lengths = [len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows]
    assert b["input_ids"].shape[0] < len(rows) and b["input_ids"].shape[1] <= 2 * max(lengths)
    assert int((b["segment"] >= 0).sum()) == sum(lengths)
    allowed = shared_prompt_mask(b["segment"], b["part"])
    seg = b["segment"]
    cross = allowed[:, 0] & (seg[:, :, None] != seg[:, None, :])
    assert not cross.any()  # no token attends to another pair
    assert allowed[:, 0].diagonal(dim1=-2, dim2=-1).all()  # padding included: no empty attention row
    assert (b["part"][seg < 0] == PAD).all()


def test_first_fit_bins_respect_capacity():
    lengths = [7, 3, 9, 2, 5, 5, 1]
    bins = pack_first_fit(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(7))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins) and len(bins) == 4


# ---- equality with two sequences per pair ----------------------------------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("pack_factor", [0.0, 1.0, 2.0, 8.0])
def test_shared_prompt_logps_equal_two_sequences(attn, pack_factor):
    model = tiny_model(attn)
    rows = pair_rows(9)
    two, one = pair_logps(model, two_sequences(rows)), pair_logps(model, shared(rows, pack_factor))
    assert torch.allclose(one.sum, two.sum, atol=1e-5, rtol=0), (one.sum - two.sum).abs().max()
    assert torch.equal(one.count, two.count)
    assert torch.allclose(one.mean_prob, two.mean_prob, atol=1e-6)


def test_empty_prompt_scores_the_same_tokens_as_two_sequences():
    """Without a prompt the first response token has no predictor in either layout."""
    model = tiny_model()
    rows = pair_rows(5, empty_prompt=True)
    two, one = pair_logps(model, two_sequences(rows)), pair_logps(model, shared(rows, 2.0))
    assert torch.equal(one.count, two.count) and torch.allclose(one.sum, two.sum, atol=1e-5, rtol=0)


def test_dpo_loss_metrics_and_gradients_unchanged():
    rows = pair_rows(10, seed=1)
    obj = DPO(beta=0.1)
    results = {}
    for name, batch in (("two", two_sequences(rows)), ("shared", shared(rows, 2.0))):
        model = tiny_model()
        out = obj.compute(model, batch, training=True)
        loss = obj.aggregate(out)
        loss.backward()
        results[name] = (loss.detach(), out, {n: p.grad.clone() for n, p in model.named_parameters()})
    (l2, o2, g2), (l1, o1, g1) = results["two"], results["shared"]
    assert torch.allclose(l1, l2, atol=1e-6)
    assert torch.allclose(o1.loss, o2.loss, atol=1e-6)
    for key in o2.metrics:
        assert torch.allclose(o1.metrics[key], o2.metrics[key], atol=1e-5), key
    for n in g2:
        assert torch.allclose(g1[n], g2[n], atol=1e-6, rtol=1e-4), n


def test_reference_logps_are_the_same_in_either_layout(tmp_path):
    model = tiny_model().eval()
    ds = datasets.Dataset.from_list(pair_rows(11))
    two = reference.compute_reference_logps(model, ds, 0, 4, "two")
    one = reference.compute_reference_logps(model, ds, 0, 4, "shared", {"share_prompt": True, "pack_factor": 2.0})
    assert torch.allclose(torch.tensor(one), torch.tensor(two), atol=1e-5, rtol=0)


def test_sft_data_ignores_share_prompt():
    rows = [{"id": "a", "_row": 0, "source": "s", "prompt_ids": [5, 6], "completion_ids": [7, 2]}]
    b = Collator(0, "sft", with_generation=False, share_prompt=True)(rows)
    assert "labels" in b and "target_index" not in b


def test_attention_without_a_custom_mask_is_one_line_error():
    model = tiny_model()
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(UserError, match="objective.share_prompt"):
        model_attention_mask(model, torch.ones(1, 1, 2, 2, dtype=torch.bool))


def test_share_prompt_is_the_default_and_reaches_the_collator(compose_cfg):
    from assay.config import validate

    spec = validate(compose_cfg(["objective=dpo", "data.format=preference"]))
    assert spec.objective.collation == {"share_prompt": True, "pack_factor": 2.0}
    off = validate(compose_cfg(["objective=dpo", "data.format=preference", "objective.share_prompt=false"]))
    assert off.objective.collation["share_prompt"] is False
    assert validate(compose_cfg([])).objective.collation == {}  # sft
