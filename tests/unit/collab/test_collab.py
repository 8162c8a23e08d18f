"""Collaborative training pieces against hand-derived numbers: FedAvg, the global anchor threshold,
the selection quality metrics, federated scoring checkpoints, adapter merging, client partitions."""

import datasets
import numpy as np
import pytest
import torch

from assay.config import CollabConfig
from assay.collab.data import check_anchor, client_partition, plan_clients, quality_report
from assay.collab.local import anchor_threshold, load_trainable, merge_adapters, merge_weights, split_moments, trainable_state, write_checkpoint
from assay.errors import UserError

flwr = pytest.importorskip("flwr")


def reply(arrays: dict, n: int):
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    content = RecordDict({"arrays": ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": n, "train_loss": float(n)})})
    return Message(content=content, dst_node_id=1, message_type="train")


def test_fedavg_weights_by_client_example_count():
    """Flower's FedAvg as the server runs it: w = Σ_k n_k w_k / Σ_k n_k, per parameter, moments too."""
    from flwr.serverapp.strategy import FedAvg

    from assay.collab.server import _aggregate

    replies = [
        reply({"lora_A": [1.0, 2.0], "exp_avg::lora_A": [0.0, 4.0]}, 1),
        reply({"lora_A": [5.0, 6.0], "exp_avg::lora_A": [8.0, 0.0]}, 3),
        reply({"lora_A": [-2.0, 10.0], "exp_avg::lora_A": [4.0, 4.0]}, 4),
    ]
    arrays, metrics = _aggregate(FedAvg(), 1, replies)
    # by hand: (1*[1,2] + 3*[5,6] + 4*[-2,10]) / 8 = [8/8, 60/8]; moments (1*[0,4] + 3*[8,0] + 4*[4,4]) / 8
    np.testing.assert_allclose(arrays["lora_A"], [1.0, 7.5], rtol=1e-6)
    np.testing.assert_allclose(arrays["exp_avg::lora_A"], [5.0, 2.5], rtol=1e-6)
    assert metrics["train_loss"] == pytest.approx((1 * 1 + 3 * 3 + 4 * 4) / 8)
    weights, m, v = split_moments(arrays)
    assert set(weights) == {"lora_A"} and set(m) == {"lora_A"} and v == {}


def test_global_threshold_is_the_anchor_quantile():
    # numpy's default (linear) quantile: position q (n - 1) in the sorted scores
    assert anchor_threshold(np.array([4.0, 1.0, 3.0, 2.0]), 0.5) == pytest.approx(2.5)
    assert anchor_threshold(np.array([4.0, 1.0, 3.0, 2.0]), 0.1) == pytest.approx(1.3)  # 1 + 0.3 (2 - 1)
    assert anchor_threshold(np.array([4.0, 1.0, 3.0, 2.0]), 0.0) == 1.0
    # an unscorable anchor (NaN) ranks lowest: sorted [-inf, -1, 0.5, 2, 3], q = 0.25 -> position 1
    assert anchor_threshold(np.array([0.5, -1.0, 2.0, 3.0, np.nan]), 0.25) == -1.0


def test_global_threshold_with_many_unscorable_anchors_is_never_nan():
    """NaN anchors rank lowest (-inf); interpolation that puts any weight on -inf gives -inf (the
    limit as the NaN scores go to -inf), where numpy's linear quantile gave NaN and every client kept nothing."""
    nan = np.nan
    anchors = np.array([nan, 3.0, nan, 1.0, nan, 2.0])  # sorted [-inf, -inf, -inf, 1, 2, 3]
    assert anchor_threshold(anchors, 0.5) == -np.inf  # position 2.5, between -inf and 1
    assert anchor_threshold(anchors, 0.2) == -np.inf  # position 1, -inf exactly
    assert anchor_threshold(anchors, 0.0) == -np.inf  # q = 0: the lowest anchor, an unscorable one
    assert anchor_threshold(anchors, 0.7) == pytest.approx(1.5)  # position 3.5, between 1 and 2
    assert anchor_threshold(anchors, 1.0) == 3.0
    assert anchor_threshold(np.full(4, nan), 0.3) == -np.inf
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.normal(size=int(rng.integers(1, 9)))
        scores[rng.random(len(scores)) < 0.5] = nan
        for q in (0.0, 0.1, 0.25, 0.5, 0.9, 1.0):
            t = anchor_threshold(scores, q)
            assert not np.isnan(t)
            if not np.isnan(scores).any():  # no NaN: numpy's linear quantile, unchanged
                assert t == np.quantile(scores, q)


def test_server_records_how_many_anchor_scores_are_nan(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from assay.collab import server

    monkeypatch.setattr(server, "load_trainable", lambda model, arrays: None)
    scorer = SimpleNamespace(score=lambda ctx: np.array([np.nan, 2.0, np.nan, 1.0, np.nan]))
    srv = SimpleNamespace(spec=SimpleNamespace(selection=SimpleNamespace(selector=SimpleNamespace(anchor_split=lambda: "val", threshold_quantile=lambda: 0.5))),
                          public={"val": None}, model=None, dir=tmp_path, state={}, scorer=lambda scoring: scorer,
                          scorer_context=lambda anchor, model: None, arrays=lambda name: {})
    assert server._anchor_threshold(srv, None, {}) == -np.inf
    assert srv.state["anchor_nan"] == 3 and srv.state["anchor_size"] == 5


def test_quality_report_is_clues_table3():
    train = datasets.Dataset.from_dict({"id": list("abcdef"), "is_corrupted": [False, False, False, True, True, False]})
    kept = np.array([True, True, False, True, False, False])
    scores = np.array([0.9, 0.8, 0.1, 0.7, -1.0, 0.0])
    r = quality_report(train, scores, kept)["is_corrupted"]
    # clean = a b c f; kept = a b d -> TP = 2; precision 2/3, recall 2/4, accuracy (a b e) 3/6
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(0.5)
    assert r["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert r["accuracy"] == pytest.approx(0.5)


def test_federated_checkpoint_reads_back_through_the_scorers_loader():
    from assay.dynamics.checkpoints import load_checkpoint, stage_checkpoints

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].weight.requires_grad_(False)
    state = {k: v + 1.0 for k, v in trainable_state(model).items()}
    m = {k: np.full_like(v, 0.5) for k, v in state.items()}
    v = {k: np.full_like(a, 0.25) for k, a in state.items()}
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        write_checkpoint(Path(d), 2, model, state, m, v, 3e-4)
        write_checkpoint(Path(d), 1, model, state, m, v, 1e-4)
        paths = stage_checkpoints(d)
        assert [p.name for p in paths] == ["step=000001.ckpt", "step=000002.ckpt"]
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        lr, moments = load_checkpoint(model, paths[1], names)
    assert lr == pytest.approx(3e-4)
    np.testing.assert_allclose(model[1].weight.detach().numpy(), state["1.weight"])
    assert torch.allclose(moments[0], torch.full_like(moments[0], 0.5)) and torch.allclose(moments[1], torch.full_like(moments[1], 0.25))


def _lora_model():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_merging_identical_adapters_returns_the_adapter(method):
    model = _lora_model()
    rng = np.random.default_rng(0)
    adapter = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in trainable_state(model).items()}
    load_trainable(model, adapter)
    x = torch.randint(0, 32, (1, 6))
    with torch.no_grad():
        before = model(input_ids=x).logits
    merge_adapters(model, [adapter, adapter, adapter], method, density=1.0)
    with torch.no_grad():
        after = model(input_ids=x).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert all(".default." in n for n in trainable_state(model))  # the merged adapter is the trainable one
    assert merge_weights(3, "linear") == [1 / 9] * 3 and merge_weights(3, "ties") == [1.0] * 3


def test_ties_trims_to_density():
    model = _lora_model()
    rng = np.random.default_rng(1)
    a = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in trainable_state(model).items()}
    b = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in trainable_state(model).items()}
    merge_adapters(model, [a, b], "ties", density=0.2)
    merged = trainable_state(model)
    key = next(k for k in merged if "lora_A" in k)
    # each adapter keeps its top 20 % by magnitude: at most 40 % of the merged entries are non-zero
    assert 0 < (merged[key] != 0).mean() <= 0.4 + 1e-9


def pool():
    rows = {"id": [f"{s}/{i}" for s in ("copy", "add", "sort") for i in range(10)], "source": [s for s in ("copy", "add", "sort") for _ in range(10)],
            "prompt": [f"{s} : {i} =" for s in ("copy", "add", "sort") for i in range(10)], "completion": [f"{i} {i + 1}" for _ in range(3) for i in range(10)]}
    return datasets.Dataset.from_dict(rows)


def test_partition_by_column_with_per_client_corruption():
    collab = CollabConfig(clients=["sort", "copy"], corruption=[0.0, 0.6])
    clients = plan_clients(pool(), collab)
    assert clients.names == ["sort", "copy"]
    zero = client_partition(pool(), clients, 0, collab, "sft", seed=0)
    noisy = client_partition(pool(), clients, 1, collab, "sft", seed=0)
    assert set(zero["source"]) == {"sort"} and not any(zero["is_corrupted"])
    assert set(noisy["source"]) == {"copy"} and sum(noisy["is_corrupted"]) > 0
    changed = [a != b for a, b in zip(noisy["completion"], pool().filter(lambda s: s == "copy", input_columns="source")["completion"])]
    assert changed == list(noisy["is_corrupted"])
    # every present value, sorted, when no clients are listed
    assert plan_clients(pool(), CollabConfig()).names == ["add", "copy", "sort"]


BAD = {
    "missing partition column": (CollabConfig(partition_by="language"), ["collab.partition_by='language'", "not a column"]),
    "more clients than partitions": (CollabConfig(num_clients=4), ["collab.num_clients=4", "more clients than partitions", "3"]),
    "client with no data after partition": (CollabConfig(clients=["copy", "count"]), ["collab.clients[1]='count'", "client 1 has no training examples after partitioning by source"]),
    "one corruption rate per client": (CollabConfig(corruption=[0.1]), ["collab.corruption=[0.1]", "one rate per client"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_client_plans(name):
    collab, fragments = BAD[name]
    with pytest.raises(UserError) as e:
        plan_clients(pool(), collab)
    assert "\n" not in str(e.value)
    for f in fragments:
        assert f in str(e.value)


def test_anchor_overlapping_client_data_is_refused():
    train = pool()
    with pytest.raises(UserError, match=r"selection.selector.split='val': overlaps client data in 2 examples"):
        check_anchor(train.select([0, 5]), train, "val")
    # the same text under other ids is the same example
    twin = train.select([3]).map(lambda r: {"id": "public/0"})
    with pytest.raises(UserError, match="overlaps client data in 1 examples"):
        check_anchor(twin, train, "val")
    check_anchor(datasets.Dataset.from_dict({"id": ["p"], "prompt": ["new"], "completion": ["x"]}), train, "val")


@pytest.mark.parametrize("field,value,fragment", [
    ("rounds", 0, "collab.rounds=0: must be a positive integer"),
    ("aggregation", 7, "collab.aggregation=7: must name a rule"),
    ("fraction_train", 0.0, "collab.fraction_train=0.0"),
])
def test_collab_config_ranges(field, value, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        CollabConfig(**{field: value})
