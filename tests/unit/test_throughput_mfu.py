"""Model FLOPs per token against a hand count, MFU arithmetic, the tokens a batch holds, and the
peak FLOP/s (datasheet table, measured CPU peak and its cache)."""

from __future__ import annotations

import pytest
import torch

from assay.run import peak
from assay.run.speed import ModelShape, Throughput, batch_counts, flops_per_token, forward_flops, mfu, model_shape, train_flops


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         vocab_size=32, tie_word_embeddings=True, max_position_embeddings=64)
    return LlamaForCausalLM(config)


# Hand count for the model above (head width 8 / 2 heads = 4; one key/value head of width 4):
#   per block: q 8x8 = 64, k 8x4 = 32, v 8x4 = 32, o 8x8 = 64, gate / up / down 8x16 = 128 each -> 576
#   2 blocks -> 1152, lm head 8x32 = 256 (tied to the embedding, but multiplied) -> N = 1408
#   the input embedding (32x8) is a lookup and the RMSNorm weights are elementwise: not counted
#   L = 2, H·Q = 2·4 = 8
N, L, HQ = 1408, 2, 8


def test_the_shape_of_a_tiny_llama_is_the_hand_count():
    assert model_shape(tiny_llama()) == ModelShape(trainable=N, frozen=0, layers=L, attention_width=HQ)


def test_full_fine_tuning_costs_6n_plus_the_attention_term_per_token():
    shape = model_shape(tiny_llama())
    # a 10-token sequence: 6·1408 + 12·2·8·10 = 8448 + 1920
    assert flops_per_token(shape, 10) == 10368
    assert train_flops(shape, tokens=10, square_sum=100) == 10 * 10368
    # and its reference forward (a live reference, TR-DPO): 2·1408 + 4·2·8·10 = 2816 + 640
    assert forward_flops(shape, tokens=10, square_sum=100) == 10 * 3456
    assert flops_per_token(shape, 10, reference_forward=True) == 10368 + 3456


def test_lora_costs_4n_frozen_plus_6n_lora_per_token():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    # adapters per block: q: A 8->2 (16) + B 2->8 (16) = 32; v: A 8->2 (16) + B 2->4 (8) = 24 -> 56; two blocks -> 112
    shape = model_shape(model)
    assert shape == ModelShape(trainable=112, frozen=N, layers=L, attention_width=HQ)
    # 4·1408 + 6·112 + 12·2·8·10 = 5632 + 672 + 1920
    assert flops_per_token(shape, 10) == 8224
    # a second, inactive adapter (TRL's frozen "ref" copy) is never multiplied: it does not count
    model.add_adapter("ref", LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    assert model_shape(model) == shape


def test_mfu_is_achieved_flops_per_second_over_the_peak():
    assert mfu(flops=3e12, seconds=2.0, peak_flops=3e12) == 0.5
    assert mfu(flops=1.0, seconds=1.0, peak_flops=4.0) == 0.25


def test_a_batch_counts_its_tokens_without_padding():
    # two-sequence layout (and SFT): the attention mask; rows of 3 and 5 tokens
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert batch_counts({"ids": ["a"], "input_ids": torch.zeros(2, 5, dtype=torch.long), "attention_mask": mask}) == (1, 8, 9 + 25)
    # shared-prompt layout: one segment per pair (3, 2 and 2 tokens), -1 on padding
    segment = torch.tensor([[0, 0, 0, 1, 1, -1], [2, 2, -1, -1, -1, -1]])
    assert batch_counts({"ids": ["a", "b", "c"], "input_ids": torch.zeros(2, 6, dtype=torch.long), "segment": segment}) == (3, 7, 9 + 4 + 4)


def test_the_run_averages_leave_the_warm_up_step_out():
    speed = Throughput(peak_flops=1000.0)
    # (samples, tokens, FLOPs, seconds) per optimizer step; the first is slow (warm-up)
    speed.steps = [(2, 10, 1000.0, 10.0), (2, 20, 400.0, 2.0), (2, 20, 400.0, 2.0)]
    got = speed.summary()
    assert got["speed/tokens_per_s"] == pytest.approx(40 / 4)
    assert got["speed/samples_per_s"] == pytest.approx(4 / 4)
    assert got["speed/mfu"] == pytest.approx(800 / 4 / 1000)
    assert got["speed/flops_per_token"] == pytest.approx(800 / 40)
    assert got["speed/peak_flops"] == 1000.0 and got["speed/peak_source"] == "trainer.peak_flops" and got["speed/timed_steps"] == 2
    one = Throughput(peak_flops=1000.0)
    one.steps = [(2, 10, 1000.0, 10.0)]  # a run of one step reports that step
    assert one.summary()["speed/tokens_per_s"] == pytest.approx(1.0)
    assert Throughput(peak_flops=1000.0).summary() == {}


@pytest.mark.parametrize("name,flops", [
    ("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100-PCIE-40GB", 312e12), ("NVIDIA A10", 125e12), ("NVIDIA L4", 121e12),
    ("NVIDIA L40S", 362e12), ("NVIDIA GeForce RTX 4090", 165.2e12), ("Some Other GPU", None),
])
def test_a_gpu_peak_comes_from_the_datasheet_table(name, flops):
    assert peak.datasheet_peak(name) == flops


def test_on_a_known_gpu_the_peak_is_the_datasheets(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    flops, source = peak.peak_flops("cuda")
    assert flops == 989.4e12 and "datasheet" in source and "H100" in source


def test_the_cpu_peak_is_measured_once_and_read_from_the_cache_after(tmp_path, monkeypatch):
    first, source = peak.peak_flops("cpu", cache_dir=tmp_path, size=32, repeats=2, threads=1)
    assert first > 0 and "cached" not in source and (tmp_path / peak.CACHE_FILE).is_file()
    calls = []

    def measure(size, device="cpu", dtype=None, repeats=3):
        calls.append((size, torch.get_num_threads()))
        return 123.0

    monkeypatch.setattr(peak, "matmul_flops", measure)
    again, source = peak.peak_flops("cpu", cache_dir=tmp_path, size=32, repeats=2, threads=1)
    assert (again, calls) == (first, []) and "cached" in source  # the same machine and threads: the cache
    other, _ = peak.peak_flops("cpu", cache_dir=tmp_path, size=32, repeats=2, threads=2)
    assert other == 123.0 and calls == [(32, 2)]  # another thread count is another key, measured at its threads
    assert peak.peak_flops("cpu", cache_dir=tmp_path, size=32, threads=2)[0] == 123.0 and len(calls) == 1
    keys = list(peak.read_cache(tmp_path / peak.CACHE_FILE))
    assert len(keys) == 2 and all(peak.cpu_model() in k and torch.__version__ in k for k in keys)


def test_a_matmul_peak_is_two_flops_per_multiply_add(monkeypatch):
    clock = iter([0.0, 1.0, 10.0, 10.5, 20.0, 20.25])  # warm-up (1 s, not counted), then 0.5 s and 0.25 s
    monkeypatch.setattr(peak.time, "perf_counter", lambda: next(clock))
    assert peak.matmul_flops(4, repeats=2) == 2 * 4**3 / 0.25


def test_a_given_peak_must_be_positive(compose_cfg):
    from assay.config import validate
    from assay.errors import UserError

    assert validate(compose_cfg(["trainer.peak_flops=1.5e11"])).trainer.peak_flops == 1.5e11
    with pytest.raises(UserError, match=r"^trainer.peak_flops=0"):
        validate(compose_cfg(["trainer.peak_flops=0"]))


def test_an_accumulated_optimizer_step_is_one_step_of_all_its_micro_batches(monkeypatch):
    """Two micro-batches per optimizer step: their samples, tokens and FLOPs add up, the step's time
    runs from the end of the step before, validation time is left out, and rates are logged from the
    second step on (the first is the warm-up)."""
    from types import SimpleNamespace

    from assay.run import speed as speed_module

    clock = iter([0.0, 1.0, 3.0, 100.0, 104.0])
    monkeypatch.setattr(speed_module.time, "perf_counter", lambda: next(clock))
    logged = []
    module = SimpleNamespace(device=torch.device("cpu"), log_dict=lambda values, **kw: logged.append(values))
    trainer = SimpleNamespace(global_step=0, world_size=1, progress_bar_callback=None, log_every_n_steps=1)
    shape = ModelShape(trainable=10, frozen=0, layers=0, attention_width=0)  # 60 FLOPs a token
    callback = Throughput(peak_flops=600.0)
    callback.shape = shape
    callback.on_fit_start(trainer, module)
    callback.on_train_start(trainer, module)
    batch = {"ids": ["a", "b"], "input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]])}
    for step in range(3):
        if step == 2:
            callback.on_validation_start(trainer, module)  # the clock restarts at the next batch (t = 100)
        for micro in range(2):
            callback.on_train_batch_start(trainer, module, batch, 0)
            trainer.global_step += micro  # Lightning steps the optimizer in the second micro-batch
            callback.on_train_batch_end(trainer, module, None, batch, 0)
    # clock: start 0; step 1 ends at 1; step 2 at 3; validation; step 3 starts at 100, ends at 104
    assert callback.steps == [(4, 10, 600.0, 1.0), (4, 10, 600.0, 2.0), (4, 10, 600.0, 4.0)]
    assert logged[0] == {"speed/tokens_per_s": 5.0, "speed/samples_per_s": 2.0, "speed/mfu": 0.5}  # step 2 alone
    assert logged[1]["speed/tokens_per_s"] == pytest.approx(20 / 6)  # steps 2 and 3
    assert callback.summary()["speed/mfu"] == pytest.approx(1200 / 6 / 600)


def test_the_end_of_run_table_shows_the_speed(capsys):
    from assay.train import print_summary

    metrics = {"test/loss": 1.2, "speed/tokens_per_s": 2500.0, "speed/samples_per_s": 190.0, "speed/mfu": 0.25, "speed/peak_source": "trainer.peak_flops"}
    print_summary({"metrics": metrics, "run_dir": "logs/x"})
    out = capsys.readouterr().out
    assert "speed/tokens_per_s" in out and "2500.0000" in out and "speed/mfu" in out and "0.2500" in out
    print_summary({"metrics": {"speed/peak_source": "measured"}, "run_dir": "logs/x"})  # no headline metric: a text value prints as text
    assert "measured" in capsys.readouterr().out
