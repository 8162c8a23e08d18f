import datasets
import pytest

from assay.data.mixture import SingleMixture, TemperatureMixture, WeightsMixture, allocate
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
    with pytest.raises(UserError, match="not a source"):
        WeightsMixture(weights={"zzz": 1.0}).apply(pool({"a": 3}))
