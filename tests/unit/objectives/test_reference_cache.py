"""Reference log-probs are cached per (reference weights, sequence): flips and reruns reuse them."""

import datasets
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from assay.objectives import reference
import pytest


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


def many_pairs(start: int, n: int) -> datasets.DatasetDict:
    """``n`` pairs with distinct prompts (so 2n distinct sequences), numbered from ``start``."""
    rows = []
    for i in range(start, start + n):
        prompt = [1, 3 + i // 289 % 17, 3 + i // 17 % 17, 3 + i % 17]
        rows.append({"id": str(i), "_row": i - start, "source": "s", "prompt_ids": prompt, "chosen_ids": [5, 2], "rejected_ids": [9, 10 + i % 5, 2]})
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})


def _writer(cache_dir, start, barrier):
    """One sweep job: reads the cache, computes its 200 pairs, and writes only once the other job
    has read the cache too (the interleaving that loses updates with a read-modify-write file).
    Both jobs report the same pid, as two jobs on two nodes of a shared filesystem can."""
    import os

    torch.set_num_threads(1)
    os.getpid = lambda: 4242
    real = reference.compute_reference_logps

    def compute_then_wait(*a, **k):
        out = real(*a, **k)
        barrier.wait(timeout=120)
        return out

    reference.compute_reference_logps = compute_then_wait
    reference.attach_reference_logps(tiny_model(), many_pairs(start, 200), 0, 64, cache_dir)


@pytest.mark.cli
def test_two_concurrent_writers_keep_every_entry(tmp_path, monkeypatch):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(tmp_path, start, barrier)) for start in (0, 200)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = reference.ReferenceCache(tmp_path, reference.weights_digest(tiny_model())[:24])
    assert len(cache.load()) == 800  # 400 pairs x (chosen, rejected), from both writers
    calls = []
    real = reference.compute_reference_logps
    monkeypatch.setattr(reference, "compute_reference_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    reference.attach_reference_logps(tiny_model(), many_pairs(0, 400), 0, 64, tmp_path)
    assert calls == []
    assert not list(tmp_path.rglob("*.tmp"))


def test_many_writes_are_merged_without_losing_entries(tmp_path):
    model = tiny_model()
    for start in range(0, 20 * 5, 5):
        reference.attach_reference_logps(model, many_pairs(start, 5), 0, 8, tmp_path)
    cache = reference.ReferenceCache(tmp_path, reference.weights_digest(model)[:24])
    assert len(cache.shards()) <= reference.MAX_SHARDS
    assert len(cache.load()) == 200


def test_corrupt_cache_file_is_reported_once_and_recomputed(tmp_path, capfd):
    model = tiny_model()
    clean, files = reference.attach_reference_logps(model, pairs(False), 0, 4, tmp_path)
    (shard,) = reference.ReferenceCache(tmp_path, reference.weights_digest(model)[:24]).shards()
    shard.write_bytes(b"PAR1 this is not a parquet file")  # a disk error, a truncated copy
    capfd.readouterr()
    again, _ = reference.attach_reference_logps(model, pairs(False), 0, 4, tmp_path)
    err = [line for line in capfd.readouterr().err.splitlines() if "reference log-prob cache" in line]
    assert len(err) == 1 and err[0].startswith("warning: reference log-prob cache file") and str(shard) in err[0], err
    assert again["train"]["ref_chosen_logps"] == clean["train"]["ref_chosen_logps"]
    assert again["train"]["ref_rejected_logps"] == clean["train"]["ref_rejected_logps"]
    reference.attach_reference_logps(model, pairs(False), 0, 4, tmp_path)
    assert capfd.readouterr().err == ""  # the bad file is gone; the recomputed values are cached


def test_corrupt_single_file_of_an_earlier_version_is_recomputed(tmp_path, capfd):
    """Earlier versions kept one <digest>.parquet per reference; a corrupt one no longer blocks every run."""
    model = tiny_model()
    legacy = tmp_path / f"{reference.weights_digest(model)[:24]}.parquet"
    legacy.write_bytes(b"\x00" * 64)
    out, _ = reference.attach_reference_logps(model, pairs(False), 0, 4, tmp_path)
    err = capfd.readouterr().err
    assert "is unreadable" in err and str(legacy) in err and not legacy.exists()
    direct = reference.compute_reference_logps(model, pairs(False)["train"], 0, 4, "direct")
    assert torch.allclose(torch.tensor(out["train"]["ref_chosen_logps"]), torch.tensor(direct[:, 0]), atol=1e-5)
