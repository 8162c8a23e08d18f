"""On-policy preference pairs (assay.models.onpolicy): which sample is chosen, by hand (ties re-drawn,
all-tie prompts dropped, empty samples skipped); the samples are cached and a second build does not
sample; flips swap the two samples with their rewards; sampling on a real model is seeded; and the
one-line errors of the settings."""

from __future__ import annotations

import datasets
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from assay.data.noise import PairwiseFlip
from assay.data.sources import SkillsData
from assay.errors import UserError
from assay.models.onpolicy import CACHE, choose_pair, on_policy_pairs, sample_responses


def test_choose_pair_by_hand():
    # rewards 1 - edit distance / length against "a b c": "a b d" 2/3, "a b c" 1 -> the exact one is chosen
    pair = choose_pair("a b c", ["a b d", "a b c", "x"])
    assert (pair["chosen"], pair["rejected"]) == ("a b c", "a b d")
    assert pair["chosen_reward"] == 1.0 and pair["rejected_reward"] == pytest.approx(2 / 3) and pair["reward_gap"] == pytest.approx(1 / 3)
    assert pair["pair_kind"] == "exact_vs_miss" and pair["pair_draws"] == 2
    # a tie (2/3 and 2/3) re-draws the second response: "x y z" (0) is the first that differs; both are wrong
    pair = choose_pair("a b c", ["a b d", "a e c", "x y z", "a b c"])
    assert (pair["chosen"], pair["rejected"], pair["pair_draws"], pair["pair_kind"]) == ("a b d", "x y z", 3, "miss_vs_miss")
    # the lower reward may come first: the chosen one is the higher, whatever the draw order
    pair = choose_pair("a b c", ["x y z", "a b d"])
    assert (pair["chosen"], pair["rejected"]) == ("a b d", "x y z")
    # every sample ties (identical texts, or distinct texts at the same reward): no pair, the prompt is dropped
    assert choose_pair("a b c", ["a b c", " a b c ", "a b c"]) is None
    assert choose_pair("a b c", ["a b d", "a e c"]) is None
    # empty samples are skipped: the first non-empty one is the anchor
    pair = choose_pair("a b c", ["", "  ", "a b c", "a"])
    assert (pair["chosen"], pair["rejected"], pair["rejected_reward"], pair["pair_draws"]) == ("a b c", "a", pytest.approx(1 / 3), 2)
    assert choose_pair("a b c", ["", ""]) is None


class Tokens:
    """A whitespace tokenizer over a fixed vocabulary (what tokenize_split and generate_texts read)."""

    pad_token_id, eos_token_id, chat_template = 0, 1, None
    vocab = ["<pad>", "<eos>", *"abcdefghxyz", "=", ":", "copy"]

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[self.vocab.index(w) for w in t.split()] for t in texts]}

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(self.vocab[int(t)] for t in row if int(t) > 1) for row in rows]


def _train():
    answers = ["a b c", "d e", "x y", "f"]
    return datasets.Dataset.from_list([
        {"id": f"copy/train/{i}", "source": "copy", "prompt": f"copy : {a} =", "answer": a, "chosen": a, "rejected": "g", "chosen_reward": 1.0,
         "rejected_reward": 0.0, "reward_gap": 1.0} for i, a in enumerate(answers)])


SAMPLES = [["a b d", "a b c"], ["d e", "d e", "d e"], ["x z", "h h h", "x y"], ["f", "g"]]


class Stub:
    def __init__(self):
        self.calls = 0

    def __call__(self, model, tokenizer, prompt_ids, samples, temperature, max_new_tokens, seed, batch_size):
        self.calls += 1
        assert len(prompt_ids) == 4 and samples == 3 and temperature == 0.7 and seed == 5
        return SAMPLES


def _data(**kw):
    return SkillsData(format="preference", pairs="on_policy", pair_samples=3, pair_temperature=0.7, pair_seed=5, seed=0, **kw)


def test_pairs_from_stub_samples_and_the_cache_is_reused(tmp_path):
    stub, model = Stub(), torch.nn.Linear(2, 2)
    out = on_policy_pairs(_train(), model, Tokens(), _data(), 8, tmp_path, sample=stub)
    # prompt 1's samples all tie and it is dropped; "x z" (1/2) vs "h h h" (0)
    assert out["id"] == ["copy/train/0", "copy/train/2", "copy/train/3"]
    assert out["chosen"] == ["a b c", "x z", "f"] and out["rejected"] == ["a b d", "h h h", "g"]
    assert out["chosen_reward"] == pytest.approx([1.0, 0.5, 1.0]) and out["rejected_reward"] == pytest.approx([2 / 3, 0.0, 0.0])
    assert out["reward_gap"] == pytest.approx([1 / 3, 0.5, 1.0]) and out["pair_kind"] == ["exact_vs_miss", "miss_vs_miss", "exact_vs_miss"]
    assert stub.calls == 1 and len(list((tmp_path / CACHE).glob("*.json"))) == 1
    again = on_policy_pairs(_train(), model, Tokens(), _data(), 8, tmp_path, sample=stub)
    assert stub.calls == 1 and again.to_list() == out.to_list()  # the second build read the cache: no sampling
    # other weights, or another setting, are another entry
    with torch.no_grad():
        model.weight.add_(1.0)
    on_policy_pairs(_train(), model, Tokens(), _data(), 8, tmp_path, sample=stub)
    on_policy_pairs(_train(), model, Tokens(), _data(), 9, tmp_path, sample=stub)
    assert stub.calls == 3 and len(list((tmp_path / CACHE).glob("*.json"))) == 3


def test_a_flip_swaps_the_two_samples_and_their_rewards(tmp_path):
    pairs = on_policy_pairs(_train(), torch.nn.Linear(2, 2), Tokens(), _data(), 8, tmp_path, sample=Stub())
    flipped = PairwiseFlip(p=0.45, seed=3).apply(pairs, "preference")
    mask = flipped["is_flipped"]
    assert any(mask) and not all(mask)
    for before, after, f in zip(pairs.to_list(), flipped.to_list(), mask):
        swapped = (before["rejected"], before["chosen"], before["rejected_reward"], before["chosen_reward"])
        same = (before["chosen"], before["rejected"], before["chosen_reward"], before["rejected_reward"])
        assert (after["chosen"], after["rejected"], after["chosen_reward"], after["rejected_reward"]) == (swapped if f else same)
        assert after["reward_gap"] == before["reward_gap"]  # the true gap of the pair stays


def test_all_prompts_tied_is_one_line(tmp_path):
    tied = lambda *a: [["a", "a"]] * 4  # noqa: E731
    with pytest.raises(UserError, match="tie on the reward; raise data.pair_samples or data.pair_temperature"):
        on_policy_pairs(_train(), torch.nn.Linear(2, 2), Tokens(), _data(), 8, tmp_path, sample=tied)


def test_sampling_a_real_model_is_seeded_and_batched():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(Tokens.vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    prompts = [[15, 14, 2, 3, 13], [15, 14, 5, 13], [15, 14, 8, 9, 10, 13]]
    state = torch.random.get_rng_state()
    one = sample_responses(model, Tokens(), prompts, 4, 1.0, 5, seed=7, batch_size=2)
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator is untouched
    assert len(one) == 3 and all(len(s) == 4 for s in one)
    assert sample_responses(model, Tokens(), prompts, 4, 1.0, 5, seed=7, batch_size=2) == one
    assert sample_responses(model, Tokens(), prompts, 4, 1.0, 5, seed=8, batch_size=2) != one
    assert model.training  # eval mode inside, restored after


@pytest.mark.parametrize("change, message", [
    ({"pair_samples": 1}, "data.pair_samples=1: must be at least 2"),
    ({"pair_temperature": 0.0}, "data.pair_temperature=0.0: must be > 0"),
    ({"format": "sft"}, "set data.format=preference"),
    ({"pair_kinds": ["exact_vs_far"]}, "set one of them"),
    ({"pairs": "sampled"}, "data.pairs='sampled': must be one of"),
])
def test_bad_settings_are_one_line(change, message):
    kw = {"format": "preference", "pairs": "on_policy", "seed": 0, **change}
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(".", r"\.")):
        SkillsData(**kw)


def test_run_level_errors(compose_cfg, tmp_path):
    from assay.config import validate
    from assay.data.examples import build_examples
    from assay.data.mixture import SingleMixture
    from assay.data.noise import NoNoise

    cfg = compose_cfg(["objective=dpo", "data.format=preference", "data.pairs=on_policy"])
    with pytest.raises(UserError, match=r"data\.pairs='on_policy': samples the pairs from the model the run starts from: set model\.init_from"):
        validate(cfg)
    from assay.run.stages import PENDING

    validate(compose_cfg(["objective=dpo", "data.format=preference", "data.pairs=on_policy", f"previous_stage={PENDING}"]))  # a recipe's preflight
    with pytest.raises(UserError, match="this command builds data without one"):
        build_examples(_data(train_per_domain=5, val_per_domain=2, test_per_domain=2), SingleMixture(), NoNoise())
    with pytest.raises(UserError, match="has none"):
        from assay.data.tables import JsonlData

        JsonlData(train_file="x.jsonl", format="preference", pairs="on_policy", seed=0)


def _preference_objectives():
    import assay.config  # noqa: F401  (registers every option)
    from assay.registry import options

    from assay.paths import CONF_DIR

    registered = options("objective")
    pairwise = registered["dpo"].data_format  # the pairwise losses share the base's property (preference data)
    names = [f.stem for f in (CONF_DIR / "objective").glob("*.yaml") if not f.stem.endswith("_schema")]
    return sorted(n for n in names if n not in registered or registered[n].data_format is pairwise)  # + the presets dr_dpo, beta_dpo


@pytest.mark.parametrize("objective", _preference_objectives())
def test_on_policy_pairs_compose_with_flips_and_every_preference_loss(objective, compose_cfg, tmp_path):
    from assay.config import validate

    run = tmp_path / "sft"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    (run / "tokenizer").mkdir()
    spec = validate(compose_cfg([f"objective={objective}", "data.format=preference", "data.pairs=on_policy", "noise=pairwise_flip",
                                 "noise.p=0.2", f"model.init_from={run}"]))
    assert spec.data.pairs == "on_policy" and spec.noise.p == 0.2
