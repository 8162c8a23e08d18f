import datasets
import pytest

import numpy as np

from assay.data.allocation import allocate, allocate_tokens
from assay.data.mixture import ScheduleMixture, SingleMixture, TemperatureMixture, WeightsMixture
from assay.errors import UserError


def pool(sizes: dict[str, int]) -> datasets.Dataset:
    rows = [{"id": f"{s}/{i}", "source": s} for s, n in sizes.items() for i in range(n)]
    return datasets.Dataset.from_list(rows)


def test_allocate_largest_remainder_sums_to_total():
    """Shares .5/.3/.2 of 7 = 3.5/2.1/1.4 -> floors 3/2/1 (6), the one left goes to the largest remainder (a)."""
    assert allocate({"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 10, "b": 10, "c": 10}, 7, 1) == {"a": 4, "b": 2, "c": 1}


def test_allocate_default_total_is_the_largest_without_repetition():
    """a has 10 examples at share 0.5 -> total at most 20; b has 30 at 0.5 -> 60; so 20 in all, 10 + 10."""
    assert allocate({"a": 0.5, "b": 0.5}, {"a": 10, "b": 30}, None, 1) == {"a": 10, "b": 10}


def test_weights_mixture_realises_counts_and_repeats_with_suffixes():
    ds = pool({"a": 4, "b": 20})
    mixed, counts = WeightsMixture(weights={"a": 1.0, "b": 1.0}, num_examples=16, max_repetition=2, seed=0).apply(ds)
    assert counts == {"a": 8, "b": 8}
    assert len(mixed) == 16 and len(set(mixed["id"])) == 16
    assert sum(i.endswith("~1") for i in mixed["id"]) == 4  # a's pool of 4 seen a second time


def test_weights_mixture_over_repetition_is_refused():
    with pytest.raises(UserError, match="mixture.num_examples"):
        WeightsMixture(weights={"a": 1.0}, num_examples=9, seed=0).apply(pool({"a": 4}))


def test_temperature_mixture_flattens_sizes():
    """Sizes 100 and 25 at T=2: weights 10 and 5 -> shares 2/3 and 1/3 (natural would be 4/5 and 1/5)."""
    props = TemperatureMixture(temperature=2.0, seed=0).proportions({"a": 100, "b": 25})
    assert props["a"] == pytest.approx(2 / 3) and props["b"] == pytest.approx(1 / 3)


def test_single_mixture_keeps_pool():
    ds = pool({"a": 3, "b": 2})
    mixed, counts = SingleMixture(seed=0).apply(ds)
    assert mixed["id"] == ds["id"] and counts == {"a": 3, "b": 2}


def test_mixture_is_seeded():
    ds = pool({"a": 50, "b": 50})
    m = lambda s: WeightsMixture(weights={"a": 1, "b": 1}, num_examples=20, seed=s).apply(ds)[0]["id"]  # noqa: E731
    assert m(1) == m(1) and m(1) != m(2)


@pytest.mark.parametrize("weights", [{"a": -1.0, "b": 1.0}, {"a": 0.0, "b": 0.0}])
def test_bad_weights(weights):
    with pytest.raises(UserError, match="mixture.weights"):
        WeightsMixture(weights=weights)


def test_unknown_source_in_weights():
    with pytest.raises(UserError, match="is not a domain of this data"):
        WeightsMixture(weights={"zzz": 1.0}).apply(pool({"a": 3}))


# ---- token mixtures, caps, data weights, schedules -------------------------------------------------


def test_allocate_tokens_by_hand():
    """Token shares .5/.5; a: 10 examples x 10 tokens (100), b: 10 x 30 (300). Default total = the
    largest within 1 epoch each = min(100/.5, 300/.5) = 200 tokens: a 100 tokens = 10 examples,
    b 100 tokens = 3.33 -> 3 examples."""
    cap = lambda s: 1.0  # noqa: E731
    assert allocate_tokens({"a": 0.5, "b": 0.5}, {"a": 10, "b": 10}, {"a": 100.0, "b": 300.0}, None, cap) == {"a": 10, "b": 3}
    # 400 tokens at cap 2: a needs 200 tokens = 2 epochs (allowed), b 200/30 = 6.67 -> 7 examples
    cap2 = lambda s: 2.0  # noqa: E731
    assert allocate_tokens({"a": 0.5, "b": 0.5}, {"a": 10, "b": 10}, {"a": 100.0, "b": 300.0}, 400, cap2) == {"a": 20, "b": 7}


def test_token_mixture_over_the_cap_names_the_domain_and_by_how_much():
    with pytest.raises(UserError, match=r"domain 'a' would need 300 tokens = 3.00 epochs of its 100, 1.50x its cap of 2 epochs"):
        allocate_tokens({"a": 0.5, "b": 0.5}, {"a": 10, "b": 10}, {"a": 100.0, "b": 300.0}, 600, lambda s: 2.0)


def test_token_weights_mixture_end_to_end():
    ds = datasets.Dataset.from_list([{"id": f"a/{i}", "source": "a"} for i in range(20)] + [{"id": f"b/{i}", "source": "b"} for i in range(20)])
    lengths = np.array([10] * 20 + [40] * 20)
    mixed, counts = WeightsMixture(weights={"a": 1, "b": 1}, unit="tokens", max_repetition=1, seed=0).apply(ds, None, lengths)
    # tokens a 200, b 800; equal token shares within 1 epoch: 400 tokens -> a 20 examples (200), b 5 (200)
    assert counts == {"a": 20, "b": 5}


def test_per_domain_cap_overrides_the_default():
    ds = pool({"a": 4, "b": 20})
    _, counts = WeightsMixture(weights={"a": 1.0, "b": 1.0}, max_epochs={"a": 3}, seed=0).apply(ds)
    assert counts == {"a": 12, "b": 12}  # a capped at 3 epochs (12) sets the total 24


def test_data_weights_multiply_the_mixture():
    """Natural shares 10/30 = .25/.75, data weight a x3 -> .5/.5; within 1 epoch: 20 examples, 10 + 10."""
    _, counts = SingleMixture(seed=0).apply(pool({"a": 10, "b": 30}), {"a": 3.0, "b": 1.0})
    assert counts == {"a": 10, "b": 10}


def test_schedule_stages_and_upsampling():
    m = ScheduleMixture(stages=[{"until": 0.5, "weights": {"a": 1}}, {"until": 1.0, "weights": {"a": 1, "b": 3}}], seed=0)
    assert m.weights_at(0.2, {"a": 10, "b": 10}) == {"a": 1.0, "b": 0.0}
    assert m.weights_at(0.7, {"a": 10, "b": 10}) == {"a": 0.25, "b": 0.75}
    up = ScheduleMixture(upsample=["b"], last_fraction=0.2, factor=3.0, seed=0)
    assert up.weights_at(0.5, {"a": 30, "b": 10}) == {"a": 0.75, "b": 0.25}
    assert up.weights_at(0.9, {"a": 30, "b": 10}) == pytest.approx({"a": 0.5, "b": 0.5})


@pytest.mark.parametrize("stages,fragment", [
    ([{"until": 0.5, "weights": {"a": 1}}], "the stages cover training up to 0.5 only"),
    ([{"until": 0.6}, {"until": 0.4}], "stages are in order"),
    ([{"until": 1.0, "weights": {"a": -1}}], "finite and >= 0"),
    ([{"until": 1.0, "weights": {"a": 0}}], "at least one weight"),
    ([{"till": 1.0}], "must be a mapping {until"),
])
def test_bad_schedules(stages, fragment):
    with pytest.raises(UserError, match="mixture.stages") as e:
        ScheduleMixture(stages=stages, seed=0)
    assert fragment in str(e.value)


def test_schedule_naming_an_unknown_domain():
    with pytest.raises(UserError, match="mixture.upsample='zzz': is not a domain"):
        ScheduleMixture(upsample=["zzz"], seed=0).check_domains(["a", "b"])
