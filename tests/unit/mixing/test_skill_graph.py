"""Skill-it's graph learned from training (assay.mixing.skill_graph): the formula by hand, a planted
structure recovered by the short runs, and the cache per starting model."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from assay.mixing import skill_graph
from assay.mixing.skill_graph import ShortRun, estimate_graph, graph_from_losses, learned_graph


def test_graph_from_losses_by_hand():
    """before = (2, 4); after training on skill 0: (1, 3), on skill 1: (2.5, 1).
    A_00 = (2 - 1)/2 = .5, A_01 = (4 - 3)/4 = .25, A_10 = max(0, (2 - 2.5)/2) = 0 (the loss rose: no
    edge), A_11 = (4 - 1)/4 = .75. Rows: the skill trained on; columns: the skill evaluated; the
    diagonal is measured like every entry, not set to 1."""
    a = graph_from_losses(np.array([2.0, 4.0]), np.array([[1.0, 3.0], [2.5, 1.0]]))
    assert a == pytest.approx(np.array([[0.5, 0.25], [0.0, 0.75]]))
    # a skill with no loss to lose has no incoming edge; a loss that does not move is 0
    b = graph_from_losses(np.array([0.0, 1.0]), np.array([[0.0, 1.0], [0.0, 0.5]]))
    assert b == pytest.approx(np.array([[0.0, 0.0], [0.0, 0.5]]))
    with pytest.raises(ValueError):
        graph_from_losses(np.array([1.0, 1.0]), np.array([1.0, 1.0]))


# ---- a toy whose structure is known: skill b's loss reads parameters no other skill trains -------

DIM = 4
TARGET = {"a": 1.0, "b": 1.0, "c": 2.0}


class Toy(torch.nn.Module):
    """Skill a's loss: |w_a − 1|²; b's: |w_b − 1|²; c's: |w_a + w_c − 2|² (shares w_a with a)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.ParameterDict({s: torch.nn.Parameter(torch.zeros(DIM)) for s in "abc"})

    def per_example(self, sources: list[str], x: torch.Tensor) -> torch.Tensor:
        w = self.w
        pred = torch.stack([w["a"] + w["c"] if s == "c" else w[s] for s in sources])
        return ((pred - x) ** 2).mean(-1)


class ToyObjective:
    def compute(self, model, batch, training, controller=None):
        return SimpleNamespace(loss=model.per_example(batch["sources"], batch["x"]))

    def aggregate(self, out):
        return out.loss.mean()

    def __repr__(self) -> str:
        return "ToyObjective()"


def _module(model=None):
    return SimpleNamespace(model=model or Toy(), objective=ToyObjective(), controller=None, device=torch.device("cpu"))


def _batch(skill: str, n: int = 4) -> dict:
    return {"sources": [skill] * n, "x": torch.full((n, DIM), TARGET[skill])}


DOMAINS = ["a", "b", "c"]
TRAIN = {d: [_batch(d)] for d in DOMAINS}
VAL = [_batch(d) for d in DOMAINS]
RUN = ShortRun(steps=5, lr=0.1, betas=(0.9, 0.95), weight_decay=0.0, schedule="constant", warmup_steps=0, total_steps=5, gradient_clip=1.0)


def test_short_runs_recover_a_planted_structure():
    """Training on b moves only w_b: no other skill's loss changes (A_ba = A_bc = 0 exactly) and no other
    skill's training reaches b (A_ab = A_cb = 0). a and c share w_a: each one's training lowers the
    other's loss. Every skill's own training lowers its loss (A_ii > 0). The model itself is untouched."""
    module = _module()
    start = {k: v.clone() for k, v in module.model.state_dict().items()}
    graph, before, after = estimate_graph(module, DOMAINS, TRAIN, VAL, RUN)
    assert graph.shape == (3, 3) and (graph >= 0).all()
    assert np.diag(graph).min() > 0.1
    a, b, c = 0, 1, 2
    assert graph[b, a] == 0.0 and graph[b, c] == 0.0 and graph[a, b] == 0.0 and graph[c, b] == 0.0
    assert graph[a, c] > 0.05 and graph[c, a] > 0.05
    assert after[b, a] == before[a] and after[b, c] == before[c]  # not merely clipped: unchanged
    assert graph == pytest.approx(graph_from_losses(before, after))
    assert before == pytest.approx([1.0, 1.0, 4.0])  # |0 − 1|², |0 − 1|², |0 − 2|²
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, start[k])
    again, _, _ = estimate_graph(_module(), DOMAINS, TRAIN, VAL, RUN)  # seeded: the same graph
    assert np.array_equal(again, graph)


def test_the_runs_own_random_state_is_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    estimate_graph(_module(), DOMAINS, TRAIN, VAL, RUN)
    assert torch.equal(torch.rand(3), expected)


def test_cached_per_starting_model(tmp_path, monkeypatch, caplog):
    """The first estimate writes <cache>/skill_graphs/<key>.json; the same starting model and settings
    read it back without training; another starting model, or other settings, miss."""
    module = _module()
    graph, info = learned_graph(module, DOMAINS, TRAIN, VAL, RUN, tmp_path)
    files = list((tmp_path / "skill_graphs").glob("*.json"))
    assert len(files) == 1 and files[0].stem == info["key"]
    saved = json.loads(files[0].read_text())
    assert saved["domains"] == DOMAINS and np.allclose(saved["graph"], graph) and saved["estimate"] == "training"
    assert info["loss_before"]["c"] == pytest.approx(4.0) and set(info["loss_after"]) == set(DOMAINS)

    calls = []
    real = skill_graph.estimate_graph
    monkeypatch.setattr(skill_graph, "estimate_graph", lambda *a, **k: calls.append(1) or real(*a, **k))
    with caplog.at_level(logging.INFO, logger="assay"):
        cached, cached_info = learned_graph(_module(), DOMAINS, TRAIN, VAL, RUN, tmp_path)
    assert calls == [] and np.array_equal(cached, graph) and cached_info == info
    assert sum("reused" in r.getMessage() for r in caplog.records) == 1

    other = Toy()
    with torch.no_grad():
        other.w["b"].fill_(0.5)  # another starting model
    learned_graph(_module(other), DOMAINS, TRAIN, VAL, RUN, tmp_path)
    assert calls == [1] and len(list((tmp_path / "skill_graphs").glob("*.json"))) == 2
    longer = ShortRun(**{**RUN.__dict__, "steps": 6})  # other settings
    learned_graph(_module(), DOMAINS, TRAIN, VAL, longer, tmp_path)
    assert calls == [1, 1]


def test_an_unreadable_cache_file_is_estimated_again(tmp_path):
    graph, info = learned_graph(_module(), DOMAINS, TRAIN, VAL, RUN, tmp_path)
    path = skill_graph.cache_path(tmp_path, info["key"])
    path.write_text("{not json")
    again, _ = learned_graph(_module(), DOMAINS, TRAIN, VAL, RUN, tmp_path)
    assert np.array_equal(again, graph) and json.loads(path.read_text())["key"] == info["key"]


def test_skill_batches_cycle_one_domain_in_full_batches():
    import datasets

    from assay.mixing.skill_graph import skill_batches

    rows = [{"id": f"{s}{i}", "source": s, "_row": r, "prompt_ids": [1, 2], "completion_ids": [3 + i]}
            for r, (s, i) in enumerate([("x", i) for i in range(3)] + [("y", i) for i in range(5)])]
    split = datasets.Dataset.from_list(rows)
    batches = skill_batches(split, "x", steps=4, batch_size=2, pad_id=0, fmt="sft", collation={})
    assert len(batches) == 4 and all(len(b["sources"]) == 2 and set(b["sources"]) == {"x"} for b in batches)
    seen = [i for b in batches for i in b["ids"]]
    assert sorted(set(seen)) == ["x0", "x1", "x2"] and len(seen) == 8  # every row, cycled over epochs


@pytest.mark.parametrize("schedule", ["constant", "constant_with_warmup", "linear", "cosine"])
def test_the_short_runs_schedule_is_the_runs(schedule):
    from assay.module import lr_multiplier

    from assay.mixing.skill_graph import lr_factor

    for warmup, total in ((0, 20), (5, 20), (50, 20)):
        run = lr_multiplier(schedule, warmup, total)
        assert [lr_factor(t, schedule, warmup, total) for t in range(total)] == [run(t) for t in range(total)]
