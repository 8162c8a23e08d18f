"""NICE (as DataFlex implements it): mean cosine of each example's loss gradient with reward-weighted policy
gradients on the target prompts, the reward being the task's ground truth."""

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from assay.models.grads import grad_param_names
from assay.selection import SelectionContext
from assay.selection.scorers import nice as nice_module
from assay.selection.scorers.nice import NICE, reward_of, sample_responses

EOS = 2


class Tok:
    pad_token_id, bos_token_id, eos_token_id = 0, 1, EOS

    @staticmethod
    def decode(ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids if not (skip_special_tokens and i in (0, 1, EOS)))


def tiny():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=2, max_position_embeddings=64))


def rows(prompts, completions, prefix):
    return datasets.Dataset.from_dict({
        "id": [f"{prefix}{i}" for i in range(len(prompts))], "source": ["x"] * len(prompts),
        "prompt": ["p"] * len(prompts), "completion": [Tok.decode(c) for c in completions],
        "prompt_ids": prompts, "completion_ids": completions,
    })


def test_rewards():
    # skill: 1 − symbol edit distance / length: "5 7" vs "5 6" is one substitution in 2 → 0.5; "9" vs "5 6" → 0
    assert reward_of("skill", "5 6", "5 6") == 1.0 and reward_of("skill", "5 6", "5 7") == 0.5 and reward_of("skill", "5 6", "9") == 0.0
    assert reward_of("exact_match", "5  6", "5 6") == 1.0 and reward_of("exact_match", "5 6", "5 7") == 0.0


def test_sampling_is_seeded_and_cut_at_eos():
    model = tiny()
    a = sample_responses(model, [[1, 5, 6], [1, 7]], 3, 6, 0.7, 0, Tok.pad_token_id, EOS)
    b = sample_responses(model, [[1, 5, 6], [1, 7]], 3, 6, 0.7, 0, Tok.pad_token_id, EOS)
    assert a == b and len(a) == 2 and all(len(r) == 3 for r in a)
    for per_prompt in a:
        for ids in per_prompt:
            assert 1 <= len(ids) <= 6 and (EOS not in ids or ids.index(EOS) == len(ids) - 1)
    assert sample_responses(model, [[1, 5, 6]], 3, 6, 0.7, 1, Tok.pad_token_id, EOS) != a[:1]


def sum_nll_grad(model, names, prompt, response, mean=False):
    params = dict(model.named_parameters())
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
    nll = F.cross_entropy(logits.float(), torch.tensor(response), reduction="sum" if not mean else "mean")
    grads = torch.autograd.grad(nll, [params[n] for n in names])
    return torch.cat([g.reshape(-1) for g in grads])


def test_score_against_a_direct_computation(monkeypatch):
    model = tiny()
    names = grad_param_names(model)
    # target 0 (answer "5 6"): samples [5 6 eos] (reward 1), [5 7 eos] (0.5); target 1 (answer "8"): [9 eos] (0), [3 eos] (0)
    targets = rows([[1, 4], [1, 3, 3]], [[5, 6, EOS], [8, EOS]], "t")
    drawn = [[[5, 6, EOS], [5, 7, EOS]], [[9, EOS], [3, EOS]]]
    monkeypatch.setattr(nice_module, "sample_responses", lambda *a, **k: drawn)
    train = rows([[1, 4], [1, 7, 7], [1, 3]], [[5, 6, EOS], [9, 9, EOS], [8, EOS]], "p")
    ctx = SelectionContext(train, splits=datasets.DatasetDict({"train": train, "val": targets}), model=model, tokenizer=Tok)
    scorer = NICE(proj_dim=0, samples=2, allow_untrained=True)
    got = scorer.score(ctx)

    # v_0 = (1/2)(1·∇NLL_sum([5 6 eos]) + 0.5·∇NLL_sum([5 7 eos])), v_1 = 0; score_i = (cos(g_i, v_0) + 0) / 2
    v0 = 0.5 * (sum_nll_grad(model, names, [1, 4], [5, 6, EOS]) + 0.5 * sum_nll_grad(model, names, [1, 4], [5, 7, EOS]))
    expected = []
    for prompt, response in zip(train["prompt_ids"], train["completion_ids"]):
        g = sum_nll_grad(model, names, prompt, response, mean=True)
        expected.append(float(F.cosine_similarity(g, v0, dim=0)) / 2)
    assert got.tolist() == pytest.approx(expected, abs=1e-4)
    assert scorer.cost["target_mean_reward"] == pytest.approx(1.5 / 4)


def test_no_reward_anywhere_scores_zero(monkeypatch):
    model = tiny()
    targets = rows([[1, 4]], [[5, 6, EOS]], "t")
    monkeypatch.setattr(nice_module, "sample_responses", lambda *a, **k: [[[9, EOS]]])
    train = rows([[1, 4], [1, 3]], [[5, 6, EOS], [8, EOS]], "p")
    ctx = SelectionContext(train, splits=datasets.DatasetDict({"train": train, "val": targets}), model=model, tokenizer=Tok)
    assert NICE(proj_dim=0, samples=1, allow_untrained=True).score(ctx).tolist() == [0.0, 0.0]


def test_config_and_bad_values(compose_cfg):
    from assay.config import validate
    from assay.errors import explain

    spec = validate(compose_cfg(["selection=nice", "selection.samples=2", "selection.reward=exact_match", "selection.allow_untrained=true"]))
    assert isinstance(spec.selection, NICE) and spec.selection.samples == 2 and spec.selection.proj_dim == 4096
    for override, name in (("selection.samples=0", "selection.samples"), ("selection.temperature=0", "selection.temperature"),
                           ("selection.reward=judge", "selection.reward")):
        with pytest.raises(Exception) as err:
            validate(compose_cfg(["selection=nice", override]))
        line = explain(err.value)
        assert "\n" not in line and name in line, line
