"""The README's "Add a method" holds: a new scorer, selector, aggregator, online mixer or collaborative rule is one
registered class (a mixer: its config, runtime and rule in one module), and the composed run picks it
by name with its own fields and nothing else."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hydra.core.config_store import ConfigStore

from assay import registry
from assay.config import validate
from assay.mixing.base import DomainStats, Mixer, OnlineMixture
from assay.objectives.aggregators import Aggregator
from assay.registry import register
from assay.selection import Scorer
from assay.selection.selectors import KeepContext, Selector


def _paths(tree: dict, prefix: tuple = ()) -> set[tuple]:
    out = set()
    for key, value in tree.items():
        out |= _paths(value, (*prefix, key)) if isinstance(value, dict) else {(*prefix, key)}
    return out


@pytest.fixture
def scratch_registry():
    """Entries registered inside a test leave the registry and the ConfigStore as they were."""
    saved, before = copy.deepcopy(registry._REGISTRY), _paths(ConfigStore.instance().repo)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    for path in _paths(ConfigStore.instance().repo) - before:
        if path[0] not in ("selection", "objective", "mixture"):
            continue  # Hydra registers its own plugins' configs on first use
        node = ConfigStore.instance().repo
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]


def test_a_new_selector_and_scorer_compose_by_name(scratch_registry, compose_cfg):
    @register("selection/selector", "bottom")
    @dataclass
    class Bottom(Selector):
        """Keep the ``share`` lowest scores."""

        name: str = "bottom"
        share: float = 0.5

        def keep(self, scores: np.ndarray, context: KeepContext) -> np.ndarray:
            return scores <= np.quantile(scores, self.share)

    @register("selection", "length")
    @dataclass
    class Length(Scorer):
        """Longer prompts score higher."""

        name: str = "length"

        def score(self, ctx) -> np.ndarray:
            return np.array([len(p) for p in ctx.train["prompt_ids"]], dtype=float)

    # a scorer's YAML names its default selector; without one, the selector is appended to the defaults
    spec = validate(compose_cfg(["selection=length", "+selection/selector=bottom", "selection.selector.share=0.25"]))
    assert isinstance(spec.selection, Length) and spec.selection.selector == Bottom(share=0.25)
    scores = np.arange(8.0)
    assert spec.selection.selector.keep(scores, None).tolist() == [True, True] + [False] * 6  # <= the 25% quantile, 1.75


def test_a_new_aggregator_composes_by_name(scratch_registry, compose_cfg):
    @register("objective/aggregator", "median")
    @dataclass
    class Median(Aggregator):
        """The median per-pair loss of the kept pairs (a robust location, for illustration)."""

        name: str = "median"

        def reduce(self, loss, kept=None):
            loss = loss if kept is None else loss[kept.bool()]
            return loss.median(), None

    spec = validate(compose_cfg(["objective=dpo", "data.format=preference", "objective/aggregator=median"]))
    assert isinstance(spec.objective.aggregator, Median) and spec.objective.method == "dpo+median"
    value, _ = spec.objective.aggregator.reduce(torch.tensor([3.0, 1.0, 2.0, 10.0]), torch.tensor([1, 1, 1, 0]))
    assert value.item() == 2.0


def test_a_new_online_mixer_is_one_module(scratch_registry, compose_cfg, tmp_path):
    """Config, runtime and rule side by side; the signals it reads are declared, and the run's wiring
    (``assay.mixing.run._online``) builds its callback without knowing its name."""
    from assay.mixing.run import _online

    class Greedy(Mixer):
        signals = ("train_loss",)

        def __init__(self, domains, initial, eta: float):
            super().__init__(domains, initial)
            self.eta = eta

        def update(self, stats: DomainStats) -> dict[str, np.ndarray]:
            loss = np.nan_to_num(stats["train_loss"], nan=0.0)
            w = self.weights * np.exp(self.eta * loss)  # the rule: more weight where the loss is high
            self.weights = w / w.sum()
            return {"weight": self.weights}

    @register("mixture", "greedy")
    @dataclass
    class GreedyMixture(OnlineMixture):
        """Exponentiated training loss (for illustration)."""

        name: str = "greedy"
        eta: float = 0.5

        def mixer(self, domains, initial):
            return Greedy(domains, initial, self.eta)

    spec = validate(compose_cfg(["mixture=greedy", "mixture.eta=2", "mixture.update_every=5"]))
    assert isinstance(spec.mixture, GreedyMixture) and spec.mixture.eta == 2 and spec.mixture.drawn
    callback = _online(spec, spec.mixture, None, None, ["a", "b"], np.array([0.5, 0.5]), 0, tmp_path, tmp_path)
    assert callback.update_every == 5 and [s.name for s in callback.signals] == ["train_loss"]
    out = callback.mixer.update(DomainStats(np.array([1, 1]), {"train_loss": np.array([np.log(3) / 2, 0.0])}))
    assert out["weight"].tolist() == pytest.approx([0.75, 0.25])  # exp(2 · ln3/2) = 3 : 1


def test_a_new_collaborative_rule_is_one_module(compose_cfg):
    """A rule is one registered class with its own fields and capabilities: ``collab.aggregation=<name>``
    (or a mapping with its fields) picks it, the old spellings' checks apply to it, and the server reads
    only its capabilities (``rounds_of_aggregation`` here), never its name."""
    from assay.cards import MethodCard
    from assay.collab.rules import COLLAB_RULES, CollabRule, collab_rule, rule_of
    from assay.errors import UserError

    @collab_rule("damped_avg")
    @dataclass
    class DampedAverage(CollabRule):
        """Move the global state a fraction of the way to the clients' average (for illustration)."""

        card = MethodCard(notes="an illustration of adding a rule")
        name: str = "damped_avg"
        step: float = 0.5
        rounds_of_aggregation = True

        def aggregate(self, current, averaged):
            return {k: current[k] + self.step * (averaged[k] - current[k]) for k in current}

    try:
        rule = rule_of({"name": "damped_avg", "step": 0.25})
        assert isinstance(rule, DampedAverage) and rule.step == 0.25 and rule_of("damped_avg").step == 0.5
        out = rule.aggregate({"w": np.zeros(2)}, {"w": np.array([4.0, -8.0])})
        assert out["w"].tolist() == [1.0, -2.0]
        with pytest.raises(UserError, match="is not a field of collab/aggregation=damped_avg"):
            rule_of({"name": "damped_avg", "density": 0.2})
        cfg = compose_cfg(["collab=skills4", "collab.aggregation=damped_avg"])
        assert rule_of(cfg.collab.aggregation).name == "damped_avg"
    finally:
        COLLAB_RULES.pop("damped_avg", None)
