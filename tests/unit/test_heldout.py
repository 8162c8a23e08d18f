"""Held-out comparisons with the reference model: win rate under the ground-truth reward and exact token KL."""

import math

import pytest
import torch

from assay.heldout import chosen_kl, token_kl, win_scores


def test_win_rate_counts_ties_half():
    policy = torch.tensor([1.0, 0.75, 0.5, 0.0, 1.0])
    reference = torch.tensor([0.5, 0.75, 1.0, 0.0, 0.75])
    # win, tie, loss, tie, win -> (1 + ½ + 0 + ½ + 1) / 5
    assert win_scores(policy, reference).tolist() == [1.0, 0.5, 0.0, 0.5, 1.0]
    assert float(win_scores(policy, reference).mean()) == pytest.approx(0.6)
    assert float(win_scores(reference, reference).mean()) == 0.5  # the reference against itself


def test_token_kl_of_constructed_distributions():
    # p = (½, ½), q = (¼, ¾): KL = ½ ln 2 + ½ ln(2/3) = ½ ln(4/3)
    # p = (¼, ¼, ½), q uniform: KL = ½ ln(3/4) + ½ ln(3/2) = ½ ln(9/8)
    p1, q1 = torch.tensor([0.5, 0.5]).log(), torch.tensor([0.25, 0.75]).log()
    p2, q2 = torch.tensor([0.25, 0.25, 0.5]).log(), torch.zeros(3)
    assert float(token_kl(p1[None], q1[None])) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    assert float(token_kl(p2[None] + 7.0, q2[None])) == pytest.approx(0.5 * math.log(9 / 8), abs=1e-6)  # logits, any offset
    assert float(token_kl(q1[None], p1[None])) == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-6)
    assert float(token_kl(p1[None], p1[None])) == 0.0


def _tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=11, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=32, pad_token_id=0, eos_token_id=1, attn_implementation="sdpa")
    return LlamaForCausalLM(config).eval()


ROWS = [
    {"id": "a", "_row": 0, "source": "s", "prompt_ids": [2, 3, 4], "chosen_ids": [5, 6, 1], "rejected_ids": [7, 1], "answer": "x"},
    {"id": "b", "_row": 1, "source": "s", "prompt_ids": [8, 9], "chosen_ids": [10, 1], "rejected_ids": [3, 4, 5, 1], "answer": "y"},
]


@pytest.mark.parametrize("share_prompt", [False, True])
def test_chosen_kl_sums_the_exact_token_kl_over_each_chosen_response(share_prompt):
    from assay.data.collate import Collator

    policy, reference = _tiny_llama(0), _tiny_llama(1)
    batch = Collator(0, "preference", with_generation=True, share_prompt=share_prompt, pack_factor=2.0)(ROWS)
    total, count = chosen_kl(policy, reference, batch)
    assert count.tolist() == [3.0, 2.0]  # the chosen response's tokens, eos included
    # by hand: one forward per (prompt + chosen), KL at the positions that predict the chosen tokens
    for k, row in enumerate(ROWS):
        ids = torch.tensor([row["prompt_ids"] + row["chosen_ids"]])
        p, c = len(row["prompt_ids"]), len(row["chosen_ids"])
        with torch.no_grad():
            lp = torch.log_softmax(policy(ids).logits[0, p - 1 : p + c - 1], -1)
            lq = torch.log_softmax(reference(ids).logits[0, p - 1 : p + c - 1], -1)
        expected = float((lp.exp() * (lp - lq)).sum())
        assert float(total[k]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    same, _ = chosen_kl(policy, policy, batch)
    assert same.abs().max() < 1e-6
