import datasets
import numpy as np
import pytest

from assay.data.noise import Corrupt, PairwiseFlip
from assay.errors import UserError


def pairs(n=2000) -> datasets.Dataset:
    return datasets.Dataset.from_list(
        [{"id": str(i), "prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]
    )


def test_flip_swaps_exactly_the_flagged_pairs_at_rate_p():
    ds = PairwiseFlip(p=0.2, seed=3).apply(pairs(), "preference")
    flipped = np.array(ds["is_flipped"])
    assert abs(flipped.mean() - 0.2) < 0.03  # 2000 draws: sd of the rate is 0.009
    for row in ds:
        assert row["chosen"].startswith("bad" if row["is_flipped"] else "good")


def test_flip_is_seeded():
    a = PairwiseFlip(p=0.3, seed=1).apply(pairs(200), "preference")["is_flipped"]
    b = PairwiseFlip(p=0.3, seed=1).apply(pairs(200), "preference")["is_flipped"]
    c = PairwiseFlip(p=0.3, seed=2).apply(pairs(200), "preference")["is_flipped"]
    assert a == b and a != c


def test_flip_needs_preference_data():
    with pytest.raises(UserError, match="needs preference data"):
        PairwiseFlip(p=0.1).apply(pairs(5), "sft")


@pytest.mark.parametrize("p", [-0.1, 0.5, 0.9])
def test_probability_outside_range(p):
    with pytest.raises(UserError, match=r"noise.p.*\[0, 0.5\)"):
        PairwiseFlip(p=p)


def test_corrupt_changes_exactly_the_flagged_completions():
    ds = datasets.Dataset.from_list([{"id": str(i), "prompt": "x", "completion": f"a b c {i % 7}"} for i in range(500)])
    out = Corrupt(p=0.4, seed=0).apply(ds, "sft")
    flags = np.array(out["is_corrupted"])
    assert abs(flags.mean() - 0.4) < 0.07
    changed = np.array([a != b for a, b in zip(ds["completion"], out["completion"])])
    assert (changed == flags).all()


def test_corrupt_kinds():
    from assay.data.noise import _corrupt

    rng = np.random.default_rng(0)
    texts = ["a b c d", "x y"]
    assert sorted(_corrupt(texts, 0, "shuffle", rng).split()) == ["a", "b", "c", "d"]
    assert _corrupt(texts, 0, "truncate", rng) == "a b"
    assert _corrupt(texts, 0, "wrong_answer", rng) == "x y"
