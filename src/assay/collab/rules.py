"""Collaborative rules (``collab/aggregation=<rule>``): what the server makes of the clients' trained
states in phase 2.

A rule is a small dataclass with its own fields (only those: ``density`` exists under ``ties`` and
``ties_factors``, nowhere else), the capabilities the server and the apps read instead of testing its
name, and what the server does each round (:meth:`CollabRule.aggregate`) or once at the end
(:meth:`CollabRule.combine`):

- ``fedavg``: every round the global model becomes the clients' trainable states averaged by example
  count (Flower's ``FedAvg.aggregate_train``).
- ``local``: no aggregation; every client trains and is evaluated on its own model (the baseline).
- ``merge_linear``, ``ties``, ``ties_factors``: every client trains its LoRA adapter once
  (``rounds x local_steps`` steps), the server merges the adapters once.

Its options are ``conf/collab/aggregation/<rule>.yaml`` (the rule's name and field defaults; a test
keeps them equal to the dataclass defaults). The composed node is typed here, by :func:`rule_of`, not
at compose time: ``assay.config`` (where ``CollabConfig`` lives) sits below the collaborative package
and may not import it. Nothing here imports Flower or PEFT at module level.

    assay-train collab=skills4 selection=clues model.lora.r=8 collab/aggregation=ties collab.aggregation.density=0.3
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from assay.cards import MethodCard
from assay.collab.merging import FIELD, lora_layers, merge_task_vectors
from assay.errors import UserError, check


COLLAB_RULES: dict[str, type["CollabRule"]] = {}
"""Rule name -> its class (``collab/aggregation=<name>``)."""


def collab_rule(name: str):
    """Register a :class:`CollabRule` dataclass as ``collab/aggregation=<name>``."""

    def wrap(cls):
        default = {f.name: f.default for f in dataclasses.fields(cls)}.get("name")
        if default != name:
            raise TypeError(f"{cls.__name__}.name must default to the rule name {name!r}")
        if name in COLLAB_RULES and COLLAB_RULES[name] is not cls:
            raise TypeError(f"collab/aggregation={name} is registered twice")
        COLLAB_RULES[name] = cls
        return cls

    return wrap


@dataclass
class CollabRule:
    """What the server does with the clients' trained states in phase 2."""

    name: str = ""

    card: ClassVar[MethodCard]
    rounds_of_aggregation: ClassVar[bool] = False
    """Phase 2 runs ``collab.rounds`` rounds, and after each the global model is what
    :meth:`aggregate` makes of the round's example-weighted mean (validated per round with
    ``collab.eval_every_round``)."""
    trains_once: ClassVar[bool] = False
    """Every client trains once, ``rounds x local_steps`` steps from the initial state, and the server
    combines the states once (:meth:`combine`)."""
    clients_keep_models: ClassVar[bool] = False
    """Every client continues from its own model each round and is evaluated on it (on the public test
    split); there is no global model, and the reported metrics are means over the clients."""
    needs_lora: ClassVar[bool] = False
    """Combines LoRA adapters: the run needs ``model.lora.r > 0``."""
    ships_emulator: ClassVar[bool] = False
    """Clients train on a compressed stand-in of the model that the server sends each round with the
    trainable state (:meth:`server_round`, :meth:`client_train`), not on the full model."""

    def check_model(self, model) -> None:
        """The base model, before any party starts: a rule that needs a shape of it refuses another in one line."""

    def prepare_model(self, model) -> None:
        """Every party's model, once built: a rule may narrow what trains (and travels)."""

    def server_round(self, srv, arrays: dict[str, np.ndarray], rnd: int) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
        """Before round ``rnd``: named array records sent to the clients with the trainable state, and
        metrics for the round's history."""
        return {}, {}

    def client_model(self, srv):
        """The model a client trains, as the server knows it (for the client-memory count)."""
        return srv.model

    def client_train(self, side, content, train):
        """A client's phase-2 round under a rule that ``ships_emulator``: ``train(model, penalty)``
        runs the local steps; returns the trainable state to send back and ``train``'s output."""
        raise TypeError(f"collab/aggregation={self.name} trains the received model as is")

    def aggregate(self, current: dict[str, np.ndarray], averaged: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The global trainable state after a round, from the current one and the clients' states
        averaged by example count (rules with ``rounds_of_aggregation`` or ``clients_keep_models``)."""
        raise TypeError(f"collab/aggregation={self.name} does not aggregate per round")

    def combine(self, model, initial: dict[str, np.ndarray], states: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The global trainable state from every client's state, once (rules with ``trains_once``).
        ``model`` is the server's model (PEFT-wrapped with LoRA), ``initial`` the state every client
        started from."""
        raise TypeError(f"collab/aggregation={self.name} does not combine once")


def discover_rules() -> None:
    """Import every module of ``assay.collab`` that registers a rule (``@collab_rule(``), so a rule
    written in a module of its own is found by name like the ones here."""
    import importlib
    import pkgutil
    from pathlib import Path

    folder = Path(__file__).parent
    for info in pkgutil.iter_modules([str(folder)]):
        path = folder / f"{info.name}.py"
        if path.is_file() and info.name != "rules" and "@collab_rule(" in path.read_text(encoding="utf-8"):
            importlib.import_module(f"assay.collab.{info.name}")


def rule_of(node: Any) -> CollabRule:
    """The typed rule of ``collab.aggregation``: a composed node or mapping (``{name: ties, density:
    0.2}``), a bare name, or a rule already. One line naming the field for an unknown rule or field,
    a wrong type or a value out of range."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, CollabRule):
        return node
    if isinstance(node, str):
        node = {"name": node}
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, Mapping):
        raise UserError(FIELD, node, f"must name a rule: collab/aggregation=<{'|'.join(sorted(COLLAB_RULES))}>")
    values = dict(node)
    name = values.pop("name", None)
    if name not in COLLAB_RULES:
        discover_rules()
    check(name in COLLAB_RULES, f"{FIELD}.name" if name is not None else FIELD, name, f"unknown rule; choose one of {sorted(COLLAB_RULES)} (collab/aggregation=<rule>)")
    cls = COLLAB_RULES[name]
    own = {f.name: f for f in dataclasses.fields(cls) if f.name != "name"}
    for key in values:
        check(key in own, f"{FIELD}.{key}", values[key], f"is not a field of collab/aggregation={name}; its fields are {sorted(own) or 'none'}")
    for key, value in values.items():
        wanted = own[key].type
        if wanted in ("float", float):
            check(isinstance(value, (int, float)) and not isinstance(value, bool), f"{FIELD}.{key}", value, "must be a number")
            values[key] = float(value)
    return cls(**values)


# --------------------------------------------------------------------------------------------------
# Per-round rules


@collab_rule("fedavg")
@dataclass
class FedAvg(CollabRule):
    """Federated averaging: each round the global model becomes the clients' states averaged by example count."""

    name: str = "fedavg"
    rounds_of_aggregation: ClassVar[bool] = True

    card: ClassVar[MethodCard] = MethodCard(
        paper="McMahan et al. 2017, Communication-Efficient Learning of Deep Networks from Decentralized Data",
        arxiv="1602.05629",
        code="adap/flower: flwr.serverapp.strategy.FedAvg.aggregate_train (flwr 1.25; weighted by the replies' num-examples), used as is",
        defaults={},
        deviations=(
            "Local work is collab.local_steps optimizer steps with a fresh AdamW each round, not E epochs of SGD: every client does the same "
            "amount of work per round whatever its pool size, and AdamW is what the single-site runs train with.",
            "With model.lora.r > 0 only the LoRA factors travel and are averaged, A and B separately, so the global update is mean(B) mean(A), "
            "not the mean of the clients' B A: the factors are what a LoRA client trains and sends (federated LoRA as usually run).",
            "Clients are weighted by the examples they kept after selection (phase 1), not by their whole pool: what they trained on.",
        ),
        checked="tests/unit/collab/test_collab.py::test_fedavg_weights_by_client_example_count (Flower's aggregate against hand-derived "
                "means); tests/integration/test_collab_rules_run.py (the global state of a run is the example-weighted mean of the last "
                "round's replies)",
        notes="collab.fraction_train is the paper's C (share of clients sampled per round); warm-up rounds of phase 1 always average this way.",
    )

    def aggregate(self, current, averaged):
        return averaged


@collab_rule("local")
@dataclass
class Local(CollabRule):
    """No collaboration: every client trains on its own data alone; metrics are means over the clients' own models."""

    name: str = "local"
    clients_keep_models: ClassVar[bool] = True

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        notes="The baseline every collaborative rule is compared against (CLUES's 'local training'): no parameter leaves a client in "
              "phase 2 except its held-out metrics on the public test split. The server still averages the replies to report a training loss.",
        checked="tests/integration/test_collab_rules_run.py (the global state stays the initial one, each client keeps and is "
                "evaluated on its own model); tests/integration/test_collab_run.py::test_multirun_sweep_over_rules_and_compare",
    )

    def aggregate(self, current, averaged):
        return current


# --------------------------------------------------------------------------------------------------
# Merge once: every client trains its adapter once, the server merges the adapters


@dataclass
class MergeRule(CollabRule):
    trains_once: ClassVar[bool] = True
    needs_lora: ClassVar[bool] = True


@collab_rule("merge_linear")
@dataclass
class MergeLinear(MergeRule):
    """Merge the clients' LoRA adapters once, factor by factor: the mean of their A and the mean of their B (PEFT's ``linear``)."""

    name: str = "merge_linear"

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        code="huggingface/peft: src/peft/tuners/lora/model.py (add_weighted_adapter, combination_type='linear'), used as is",
        deviations=(
            "The merged update is mean(B) mean(A) (times lora_alpha / r), not the mean of the clients' B A: PEFT combines the factors, "
            "and weights 1 / K^2 (each factor gets sqrt(weight x scaling)) make K identical adapters merge to themselves.",
        ),
        checked="tests/unit/collab/test_collab.py::test_merging_identical_adapters_returns_the_adapter; "
                "tests/integration/test_collab_rules_run.py (a run merges once)",
        notes="A baseline of one-shot merging (no paper's method): equal weights, one merge after rounds x local_steps local steps.",
    )

    def combine(self, model, initial, states):
        from assay.collab.local import load_trainable, merge_adapters, trainable_state

        load_trainable(model, initial)
        merge_adapters(model, states, "linear", density=1.0)
        return trainable_state(model)


def _check_density(density: float) -> None:
    check(0.0 < density <= 1.0, f"{FIELD}.density", density, "must be in (0, 1]: the share of each client's entries TIES keeps")


@collab_rule("ties_factors")
@dataclass
class TiesFactors(MergeRule):
    """TIES on the LoRA factors: trim, elect signs and take the disjoint mean of the clients' A and, separately, their B (CLUES's merge)."""

    name: str = "ties_factors"
    density: float = 0.2
    """Share of each client's A (and B) entries kept, by magnitude, in (0, 1]."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Yadav et al. 2023, TIES-Merging: Resolving Interference When Merging Models (as applied by CLUES, Zhao et al., NeurIPS 2024)",
        arxiv="2306.01708",
        code="huggingface/peft: src/peft/tuners/lora/model.py (add_weighted_adapter, combination_type='ties': "
             "_generalized_task_arithmetic_weighted_adapter) and src/peft/utils/merge_utils.py (ties); CLUES's released merging script "
             "calls exactly this (combination_type='ties', density 0.2, equal weights)",
        defaults={"density": "0.2 (CLUES's script: 0.2; the TIES paper's top-k 20 %); follows"},
        deviations=(
            "TIES is applied to each LoRA factor separately (the clients' A matrices, then their B matrices), not to the task vectors "
            "(the weight updates s B A) on which the TIES paper defines it: this is what CLUES's released code does through PEFT, kept "
            "as is to reproduce CLUES. The task-vector form is collab/aggregation=ties; the two give different merges.",
            "Trimming keeps exactly int(density x entries) of each factor (PEFT's topk); the TIES authors' code keeps one more "
            "(and every entry tied with the last). Signs are elected per entry by the sum of the trimmed values, a zero sum counting as +.",
            "Equal weights, as CLUES (weight 1 each, so the disjoint mean of K identical adapters is that adapter); no scaling lambda "
            "(the paper tunes lambda on validation data, which a collaborative server does not hold).",
        ),
        checked="tests/unit/collab/test_collab_rules.py::test_ties_rule_on_a_peft_model_matches_the_toy_and_peft_ties_svd_and_differs_"
                "from_ties_factors (the factor-wise TIES derived by hand on a toy, different from ties there); "
                "tests/unit/collab/test_collab.py::test_merging_identical_adapters_returns_the_adapter and test_ties_trims_to_density",
    )

    def __post_init__(self) -> None:
        _check_density(self.density)

    def combine(self, model, initial, states):
        from assay.collab.local import load_trainable, merge_adapters, trainable_state

        load_trainable(model, initial)
        merge_adapters(model, states, "ties", self.density)
        return trainable_state(model)


@collab_rule("ties")
@dataclass
class Ties(MergeRule):
    """TIES on task vectors: per LoRA layer, trim / elect / disjoint-mean the clients' updates s·B A, then project back to rank r by SVD."""

    name: str = "ties"
    density: float = 0.2
    """Share of each client's update entries kept, by magnitude, per layer, in (0, 1]."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Yadav et al. 2023, TIES-Merging: Resolving Interference When Merging Models",
        arxiv="2306.01708",
        code="prateeky2806/ties-merging: src/utils/merge_utils.py (topk_values_mask, resolve_sign, disjoint_merge); "
             "huggingface/peft: src/peft/utils/merge_utils.py (ties) and add_weighted_adapter(..., 'ties_svd'), which merges the same "
             "delta weights and projects with SVD",
        defaults={"density": "0.2 (the paper's top-k 20 %, CLUES's density); follows"},
        deviations=(
            "For LoRA clients the task vector of a layer is its update s (B_c A_c - B_0 A_0) (s = lora_alpha / r; B_0 = 0 at PEFT's "
            "default init), and the merged update is projected back to the adapter's rank r by truncated SVD "
            "(B = U_r sqrt(S_r / s), A = sqrt(S_r / s) V_r^T, so s B A is the best rank-r approximation): the paper merges full "
            "weights, but the result must load as a LoRA adapter of the run's rank. Exact where the merged update has rank <= r.",
            "Trimming is per layer (each client keeps the top density share of each layer's update), not over the whole flattened "
            "task vector as in the authors' code: a global trim can drop every entry of a layer whose update is small, and a per-layer "
            "trim is what PEFT does. It keeps exactly int(density x entries), at least one (ties broken by position); the authors' "
            "kthvalue keeps one more and every entry tied with the last.",
            "A zero elected sign (the trimmed values cancel exactly) becomes the majority of the layer's elected signs, + on a tie (the "
            "authors resolve it over the whole model). Trainable parameters outside LoRA pairs merge as plain task vectors theta_c - theta_0.",
            "Equal weights (CLUES's choice; a weighted disjoint mean divides by the agreeing clients' weights) and no scaling lambda "
            "(the paper tunes it on validation data, which a collaborative server does not hold).",
        ),
        checked="tests/unit/collab/test_collab_rules.py::test_ties_on_task_vectors_against_a_hand_derived_toy (trim, elect, disjoint "
                "mean and the rank-r adapter against hand-derived numbers) and test_ties_rule_on_a_peft_model_matches_the_toy_and_peft_"
                "ties_svd_and_differs_from_ties_factors (the same update as PEFT's ties_svd; not the factor-wise one); "
                "tests/integration/test_collab_rules_run.py (a run's global adapter is this merge of the clients' replies)",
        notes="CLUES's released code uses the factor-wise form (collab/aggregation=ties_factors); this is the TIES paper's definition.",
    )

    def __post_init__(self) -> None:
        _check_density(self.density)

    def combine(self, model, initial, states):
        return merge_task_vectors(lora_layers(model), initial, states, self.density)
