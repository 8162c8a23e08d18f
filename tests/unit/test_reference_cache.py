"""Reference log-probs are cached per (reference weights, sequence): flips and reruns reuse them."""

import datasets
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from assay.objectives import reference


def tiny_model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval()


def pairs(flip: bool) -> datasets.DatasetDict:
    rows = []
    for i in range(6):
        chosen, rejected = [3 + i % 4, 2], [9, 10 + i % 5, 2]
        if flip and i % 2:
            chosen, rejected = rejected, chosen
        rows.append({"id": str(i), "_row": i, "source": "s", "prompt_ids": [1, 4 + i], "chosen_ids": chosen, "rejected_ids": rejected})
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})


def test_flipped_pairs_reuse_the_cache_and_swap_values(tmp_path, monkeypatch):
    model = tiny_model()
    clean, _ = reference.attach_reference_logps(model, pairs(False), 0, 4, tmp_path)
    calls = []
    real = reference.compute_reference_logps
    monkeypatch.setattr(reference, "compute_reference_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    flipped, files = reference.attach_reference_logps(model, pairs(True), 0, 4, tmp_path)
    assert calls == []  # every sequence was already cached
    c, f = clean["train"], flipped["train"]
    assert f["ref_chosen_logps"][1] == c["ref_rejected_logps"][1] and f["ref_chosen_logps"][0] == c["ref_chosen_logps"][0]
    # the cached values are the model's summed response log-probs
    direct = real(model, pairs(False)["train"], 0, 4, "direct")
    assert torch.allclose(torch.tensor(c["ref_chosen_logps"]), torch.tensor(direct[:, 0]), atol=1e-5)


def test_other_weights_use_another_file(tmp_path):
    _, a = reference.attach_reference_logps(tiny_model(), pairs(False), 0, 4, tmp_path)
    other = tiny_model()
    with torch.no_grad():
        other.lm_head.weight.add_(0.01)
    _, b = reference.attach_reference_logps(other, pairs(False), 0, 4, tmp_path)
    assert a["train"] != b["train"]
