"""The collaborative rules (``collab/aggregation=<rule>``): the registry, its options and cards, and
TIES on task vectors against a hand-derived toy (and against the factor-wise TIES CLUES's code runs)."""

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from assay.cards import MethodCard
from assay.collab.merging import lora_layers, merge_task_vectors, project_lora, ties_merge, trim
from assay.collab.rules import COLLAB_RULES, CollabRule, Ties, discover_rules, TiesFactors, rule_of
from assay.errors import UserError
from assay.paths import CONF_DIR

# --------------------------------------------------------------------------------------------------
# The toy: one LoRA layer 2 x 2, rank r = 2, lora_alpha = 4, so s = lora_alpha / r = 2; three clients.
S = 2.0
B = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, -1.0]])]
A = [np.array([[3.0, -1.0], [0.5, 2.0]]), np.array([[-1.0, 0.25], [-2.0, 1.75]]), np.array([[0.6875, -0.75], [1.0, 1.25]])]
# By hand, the task vectors ΔW_c = s B_c A_c:
#   B1 = I              -> B1 A1 = A1                    = [[3, -1], [0.5, 2]]        -> ΔW1 = [[6, -2], [1, 4]]
#   B2 swaps the rows   -> B2 A2 = [[-2, 1.75], [-1, 0.25]]                          -> ΔW2 = [[-4, 3.5], [-2, 0.5]]
#   B3 = diag(2, -1)    -> B3 A3 = [[1.375, -1.5], [-1, -1.25]]                      -> ΔW3 = [[2.75, -3], [-2, -2.5]]
DELTAS = [np.array([[6.0, -2.0], [1.0, 4.0]]), np.array([[-4.0, 3.5], [-2.0, 0.5]]), np.array([[2.75, -3.0], [-2.0, -2.5]])]
# Trim at density 0.5: each keeps int(0.5 x 4) = 2 entries, its largest magnitudes
#   ΔW1: |6| |4|      -> [[6, 0], [0, 4]]
#   ΔW2: |-4| |3.5|   -> [[-4, 3.5], [0, 0]]
#   ΔW3: |-3| |2.75|  -> [[2.75, -3], [0, 0]]
TRIMMED = [np.array([[6.0, 0.0], [0.0, 4.0]]), np.array([[-4.0, 3.5], [0.0, 0.0]]), np.array([[2.75, -3.0], [0.0, 0.0]])]
# Elect: the sign of the sum of the trimmed values, per entry
#   (0,0): 6 - 4 + 2.75 = 4.75 -> +   (0,1): 3.5 - 3 = 0.5 -> +   (1,0): 0 (nobody kept it)   (1,1): 4 -> +
# Disjoint mean over the clients whose trimmed value agrees with the elected sign:
#   (0,0): (6 + 2.75) / 2 = 4.375   (0,1): 3.5 / 1   (1,0): 0   (1,1): 4 / 1
MERGED = np.array([[4.375, 3.5], [0.0, 4.0]])


def test_ties_on_task_vectors_against_a_hand_derived_toy():
    for b, a, delta in zip(B, A, DELTAS):
        np.testing.assert_array_equal(S * b @ a, delta)
    for delta, trimmed in zip(DELTAS, TRIMMED):
        np.testing.assert_array_equal(trim(delta, 0.5), trimmed)
    # (a) before projection: the merged update is the hand-derived one
    np.testing.assert_allclose(ties_merge(DELTAS, 0.5), MERGED)
    # (b) projected to rank r = 2 >= rank(MERGED), the adapter reproduces it exactly: s B A = MERGED
    b, a = project_lora(MERGED, 2, S)
    assert b.shape == (2, 2) and a.shape == (2, 2)
    np.testing.assert_allclose(S * b @ a, MERGED, atol=1e-12)
    # ... and through a trainable state (B_0 = 0 at PEFT's init, so the update is s B_c A_c itself)
    initial = {"l.lora_A.weight": np.full((2, 2), 0.3, dtype=np.float32), "l.lora_B.weight": np.zeros((2, 2), dtype=np.float32)}
    states = [{"l.lora_A.weight": a_c, "l.lora_B.weight": b_c} for a_c, b_c in zip(A, B)]
    out = merge_task_vectors([("l.lora_A.weight", "l.lora_B.weight", S)], initial, states, 0.5)
    np.testing.assert_allclose(S * out["l.lora_B.weight"].astype(np.float64) @ out["l.lora_A.weight"], MERGED, atol=1e-5)
    assert out["l.lora_A.weight"].dtype == np.float32
    # with rank 1 the adapter is the best rank-1 approximation (Eckart-Young: the top singular pair)
    b1, a1 = project_lora(MERGED, 1, S)
    u, s, vt = np.linalg.svd(MERGED)
    np.testing.assert_allclose(S * b1 @ a1, s[0] * np.outer(u[:, 0], vt[0]), atol=1e-12)


def test_weighted_disjoint_mean_and_a_vanishing_entry():
    # weights 3 and 1 on the two clients that agree at (0,0): (3 x 6 + 1 x 2.75) / 4
    merged = ties_merge(DELTAS, 0.5, weights=[3.0, 1.0, 1.0])
    assert merged[0, 0] == pytest.approx((3 * 6 + 2.75) / 4)
    np.testing.assert_allclose(merged[[0, 1, 1], [1, 0, 1]], [3.5, 0.0, 4.0])
    # density 1: nothing is trimmed; (0,0) elects + (6 - 4 + 2.75), so the mean of 6 and 2.75
    assert ties_merge(DELTAS, 1.0)[0, 0] == pytest.approx((6 + 2.75) / 2)


def _toy_peft_model():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    return get_peft_model(torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False)), LoraConfig(r=2, lora_alpha=4, target_modules=["0"]))


def _factors(model) -> tuple[str, str]:
    ((a_key, b_key, scaling),) = lora_layers(model)
    assert scaling == S
    return a_key, b_key


def _delta(model, a_key, b_key) -> np.ndarray:
    params = dict(model.named_parameters())
    return S * params[b_key].detach().double().numpy() @ params[a_key].detach().double().numpy()


def test_ties_rule_on_a_peft_model_matches_the_toy_and_peft_ties_svd_and_differs_from_ties_factors():
    from assay.collab.local import load_trainable, trainable_state

    model = _toy_peft_model()
    a_key, b_key = _factors(model)
    initial = trainable_state(model)
    assert set(initial) == {a_key, b_key} and not initial[b_key].any()  # PEFT's init: B = 0
    states = [{a_key: a.astype(np.float32), b_key: b.astype(np.float32)} for a, b in zip(A, B)]

    merged = Ties(density=0.5).combine(model, initial, states)
    load_trainable(model, merged)
    np.testing.assert_allclose(_delta(model, a_key, b_key), MERGED, atol=1e-5)

    # PEFT's ties_svd (TIES on the delta weights, then SVD) gives the same update: a peer check
    peer = _toy_peft_model()
    for k, state in enumerate(states):
        peer.add_adapter(f"c{k}", peer.peft_config["default"])
        params = dict(peer.named_parameters())
        with torch.no_grad():
            for key, value in state.items():
                params[key.replace(".default.", f".c{k}.")].copy_(torch.as_tensor(value))
    peer.add_weighted_adapter(["c0", "c1", "c2"], [1.0, 1.0, 1.0], "tv", combination_type="ties_svd", density=0.5, majority_sign_method="total")
    params = dict(peer.named_parameters())
    tv = params[b_key.replace(".default.", ".tv.")].detach().double().numpy() @ params[a_key.replace(".default.", ".tv.")].detach().double().numpy()
    np.testing.assert_allclose(tv, MERGED, atol=1e-5)  # the merged adapter has alpha = r: scaling 1

    # the factor-wise TIES of CLUES's code: TIES on the A's and on the B's separately, s B_ties A_ties
    factor_model = _toy_peft_model()
    load_trainable(factor_model, TiesFactors(density=0.5).combine(factor_model, trainable_state(factor_model), states))
    factorwise = _delta(factor_model, a_key, b_key)
    np.testing.assert_allclose(factorwise, S * ties_merge(B, 0.5) @ ties_merge(A, 0.5), atol=1e-5)
    # by hand: the A's trimmed to [[3,0],[0,2]], [[0,0],[-2,1.75]], [[0,0],[1,1.25]]; sums [[3, 0], [-1, 5]]
    # elect [+, + (a zero sum: the majority of the elected signs); -, +], disjoint means [[3, 0], [-2, 5/3]].
    # The B's keep their two nonzero entries each; sums [[3, 1], [1, 0]] elect + everywhere ((1,1) by the
    # majority), disjoint means [[(1 + 2) / 2, 1], [1, 1]]
    np.testing.assert_allclose(ties_merge(A, 0.5), [[3.0, 0.0], [-2.0, 5.0 / 3.0]])
    np.testing.assert_allclose(ties_merge(B, 0.5), [[1.5, 1.0], [1.0, 1.0]])
    # the two forms differ on the same toy
    assert not np.allclose(factorwise, MERGED, atol=1e-2)


def test_merging_identical_adapters_returns_the_adapter_update():
    """K copies of one adapter (rank r, so its update has rank <= r): TIES at density 1 gives the same s B A."""
    from assay.collab.local import trainable_state

    model = _toy_peft_model()
    a_key, b_key = _factors(model)
    adapter = {a_key: A[0].astype(np.float32), b_key: B[2].astype(np.float32)}
    merged = Ties(density=1.0).combine(model, trainable_state(model), [adapter] * 3)
    np.testing.assert_allclose(S * merged[b_key].astype(np.float64) @ merged[a_key], S * B[2] @ A[0], atol=1e-5)


def test_ties_keeps_non_lora_trainables_as_task_vectors():
    initial = {"w": np.array([1.0, 1.0, 1.0], dtype=np.float32)}
    states = [{"w": np.array([2.0, 1.5, 0.0], dtype=np.float32)}, {"w": np.array([3.0, 0.0, 1.25], dtype=np.float32)}]
    # task vectors [1, 0.5, -1] and [2, -1, 0.25]; density 1: elect [+, -, -], disjoint means [1.5, -1, -1]
    with pytest.raises(UserError, match="model has none"):
        merge_task_vectors([], initial, states, 1.0)
    out = merge_task_vectors([("a", "b", 1.0)], {**initial, "a": np.zeros((1, 3), np.float32), "b": np.zeros((3, 1), np.float32)},
                             [{**s, "a": np.zeros((1, 3), np.float32), "b": np.zeros((3, 1), np.float32)} for s in states], 1.0)
    np.testing.assert_allclose(out["w"], [2.5, 0.0, 0.0])


# --------------------------------------------------------------------------------------------------
# The registry, its options, its cards


def test_every_rule_has_an_option_file_with_its_defaults_and_a_card():
    discover_rules()
    assert set(COLLAB_RULES) == {"fedavg", "local", "merge_linear", "ties", "ties_factors", "fedbiot"}
    folder = CONF_DIR / "collab" / "aggregation"
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(COLLAB_RULES)
    for name, cls in COLLAB_RULES.items():
        assert issubclass(cls, CollabRule) and cls().name == name
        option = yaml.safe_load((folder / f"{name}.yaml").read_text())
        assert option == dataclasses.asdict(cls()), name  # the option file holds exactly the rule's fields and defaults
        card = cls.card
        assert isinstance(card, MethodCard) and card.checked, name
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(card.defaults) <= fields, name
        assert rule_of(option) == cls() and rule_of(name) == cls()
    # what the server and apps read instead of the name
    assert sorted(n for n, c in COLLAB_RULES.items() if c.rounds_of_aggregation) == ["fedavg", "fedbiot"]
    assert [n for n, c in COLLAB_RULES.items() if c.ships_emulator] == ["fedbiot"]
    assert [n for n, c in COLLAB_RULES.items() if c.clients_keep_models] == ["local"]
    assert sorted(n for n, c in COLLAB_RULES.items() if c.trains_once) == ["merge_linear", "ties", "ties_factors"]
    assert all(c.needs_lora == c.trains_once for c in COLLAB_RULES.values())
    # the TIES cards say which form CLUES's code runs and that the paper defines TIES on task vectors
    assert "2306.01708" == Ties.card.arxiv == TiesFactors.card.arxiv
    assert "CLUES" in TiesFactors.card.code and "'ties'" in TiesFactors.card.code and "task vectors" in " ".join(TiesFactors.card.deviations)
    assert "factor-wise" in Ties.card.notes and "ties_factors" in Ties.card.notes


@pytest.mark.parametrize("node,fragment", [
    ({"name": "gossip"}, "collab.aggregation.name='gossip': unknown rule; choose one of ['fedavg', 'fedbiot', 'local', 'merge_linear', 'ties', 'ties_factors']"),
    ({"name": "fedavg", "density": 0.2}, "collab.aggregation.density=0.2: is not a field of collab/aggregation=fedavg; its fields are none"),
    ({"name": "ties", "density": 0.0}, "collab.aggregation.density=0.0: must be in (0, 1]"),
    ({"name": "ties_factors", "density": 1.5}, "collab.aggregation.density=1.5: must be in (0, 1]"),
    ({"name": "ties", "density": "high"}, "collab.aggregation.density='high': must be a number"),
    ({"density": 0.2}, "collab.aggregation=None: unknown rule"),
])
def test_bad_rules_are_one_line(node, fragment):
    with pytest.raises(UserError) as e:
        rule_of(node)
    assert "\n" not in str(e.value) and fragment in str(e.value)


def test_rule_fields_are_typed():
    assert rule_of({"name": "ties", "density": 1}) == Ties(density=1.0)
    assert isinstance(rule_of({"name": "ties", "density": 1}).density, float)
    assert rule_of(Ties(density=0.3)).density == 0.3
