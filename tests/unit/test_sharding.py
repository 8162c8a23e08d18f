"""Several processes without processes: the sampler's shards and the per-rank store parts."""

import numpy as np
import pandas as pd
import pytest

from assay.dynamics.store import GradientStore, PerSampleStore, read_gradients, read_store
from assay.ordering.curricula import Curriculum, Folding
from assay.ordering.baselines import RandomOrdering as RandomOrder
from assay.ordering.sampler import OrderedSampler

ROWS = np.arange(3, 3 + 23)  # 23 kept rows: divides by neither 2 nor 4
SCORES = np.random.default_rng(1).random(40)


def shards(ordering, world: int, epoch: int = 0) -> list[list[int]]:
    out = []
    for rank in range(world):
        sampler = OrderedSampler(ordering, ROWS, SCORES, rank=rank, world=world)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
        assert len(sampler) == len(out[-1])
    return out


@pytest.mark.parametrize("ordering", [RandomOrder(seed=3), Curriculum(seed=0), Folding(seed=0)], ids=lambda o: o.name)
@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_rank_gets_the_same_count_and_the_global_order_does_not_depend_on_world(ordering, world):
    one = shards(ordering, 1, epoch=1)[0]
    many = shards(ordering, world, epoch=1)
    assert len(one) == len(ROWS)
    assert len({len(s) for s in many}) == 1 and len(many[0]) == len(ROWS) // world  # no rank waits for another
    # rank r's i-th row is global position i*world + r: interleaving the shards gives back the
    # one-process order, less its last len % world rows (dropped, never repeated)
    interleaved = [row for group in zip(*many) for row in group]
    assert interleaved == one[: len(ROWS) // world * world]
    assert len(set(interleaved)) == len(interleaved)


def test_one_step_of_w_ranks_is_one_step_of_one_process_with_w_times_the_batch():
    b, world = 3, 2
    one = shards(RandomOrder(seed=5), 1)[0]
    many = shards(RandomOrder(seed=5), world)
    for step in range(len(ROWS) // (b * world)):
        together = sorted(row for shard in many for row in shard[step * b : (step + 1) * b])
        assert together == sorted(one[step * b * world : (step + 1) * b * world])


def test_resumed_rank_continues_its_own_shard():
    full = shards(RandomOrder(seed=2), 2)[1]
    sampler = OrderedSampler(RandomOrder(seed=2), ROWS, SCORES, rank=1, world=2)
    sampler.advance(4)
    state = sampler.state_dict()
    assert state["world"] == 2
    resumed = OrderedSampler(RandomOrder(seed=2), ROWS, SCORES, rank=1, world=2)
    resumed.load_state_dict(state)
    assert list(resumed) == full[4:]


def _losses(store, step, ids):
    store.append(step, {"id": ids, "step": [step] * len(ids), "loss": [float(step)] * len(ids)})


def test_each_rank_writes_and_truncates_its_own_parts(tmp_path):
    ranks = [PerSampleStore(tmp_path), PerSampleStore(tmp_path)]
    for r, store in enumerate(ranks):
        store.set_rank(r, 2)
    for step in range(1, 7):
        _losses(ranks[0], step, ["a", "b"])
        _losses(ranks[1], step, ["c", "d"])
        if step % 3 == 0:
            for store in ranks:
                store.flush()  # the same step range on both ranks: two files, not one overwritten
    names = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert names == [
        "part-000000001-000000003-rank000.parquet", "part-000000001-000000003-rank001.parquet",
        "part-000000004-000000006-rank000.parquet", "part-000000004-000000006-rank001.parquet",
    ]
    df = read_store(tmp_path)
    assert len(df) == 24 and not df.duplicated(["id", "step"]).any()
    assert df.groupby("rank")["id"].agg(lambda s: sorted(set(s))).to_dict() == {0: ["a", "b"], 1: ["c", "d"]}

    ranks[1].truncate_after(4)  # only rank 1's parts change
    df = read_store(tmp_path)
    assert df[df["rank"] == 1]["step"].max() == 4 and df[df["rank"] == 0]["step"].max() == 6


def test_one_process_store_records_rank_zero_under_the_old_names(tmp_path):
    store = PerSampleStore(tmp_path)
    _losses(store, 1, ["a"])
    store.flush()
    assert [p.name for p in tmp_path.glob("*.parquet")] == ["part-000000001-000000001.parquet"]
    assert read_store(tmp_path)["rank"].tolist() == [0]


def test_gradient_parts_per_rank(tmp_path):
    stores = [GradientStore(tmp_path), GradientStore(tmp_path)]
    for r, store in enumerate(stores):
        store.set_rank(r, 2)
        for step in (2, 4):
            store.append(step, {"id": [f"r{r}a", f"r{r}b"], "step": [step, step]}, np.full((2, 3), r + step, dtype=np.float32))
        store.flush()
    records = read_gradients(tmp_path)
    assert len(records) == 8 and not records.index.duplicated(["id", "step"]).any()
    feats = records.features()
    expected = records.index["rank"].to_numpy() + records.index["step"].to_numpy()
    assert (feats == expected[:, None]).all()
    stores[0].truncate_after(2)
    index = read_gradients(tmp_path).index
    assert sorted(pd.unique(index[index["rank"] == 0]["step"])) == [2]
    assert sorted(pd.unique(index[index["rank"] == 1]["step"])) == [2, 4]
