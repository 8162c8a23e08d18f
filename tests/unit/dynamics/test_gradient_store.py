"""The gradient store: Parquet index + memory-mapped feature arrays, keyed by (id, step), truncated
on resume without duplicates or gaps."""

import numpy as np
import pytest

from assay.dynamics.store import GradientStore, read_gradients


def features_of(step: int, ids: list[str]) -> np.ndarray:
    """A distinct, recognisable row per (id, step): [step, index of id, step * 10 + index]."""
    return np.array([[step, i, step * 10 + i] for i, _ in enumerate(ids)], dtype=np.float32)


def fill(store: GradientStore, steps, ids=("a", "b", "c"), flush_at=(3, 6)) -> None:
    for step in steps:
        store.append(step, {"id": list(ids), "step": [step] * len(ids), "grad_norm": [float(step)] * len(ids)}, features_of(step, list(ids)))
        if step in flush_at:
            store.flush()


def test_records_read_back_memory_mapped_in_step_id_order(tmp_path):
    store = GradientStore(tmp_path)
    fill(store, range(1, 7))
    rec = read_gradients(tmp_path)
    assert len(rec) == 18 and rec.dim == 3
    assert all(isinstance(p, np.memmap) for p in rec.parts)  # not read into memory
    assert rec.index[["step", "id"]].values.tolist() == [[s, i] for s in range(1, 7) for i in "abc"]
    assert np.array_equal(rec.features(), np.concatenate([features_of(s, list("abc")) for s in range(1, 7)]))
    at5 = rec.index[(rec.index.step == 5) & (rec.index.id == "c")]
    assert rec.features(at5).tolist() == [[5.0, 2.0, 52.0]]


def test_truncation_keeps_records_up_to_the_checkpoint_step_only(tmp_path):
    store = GradientStore(tmp_path)
    fill(store, range(1, 7))
    (tmp_path / "part-000000007-000000007.npy").write_bytes(b"half-written")  # a flush killed before its index
    store.truncate_after(4)
    rec = read_gradients(tmp_path)
    assert rec.index["step"].max() == 4 and len(rec) == 12
    assert not rec.index.duplicated(["id", "step"]).any()
    assert np.array_equal(rec.features(), np.concatenate([features_of(s, list("abc")) for s in range(1, 5)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "part-000000001-000000003.npy", "part-000000001-000000003.parquet", "part-000000004-000000004.npy", "part-000000004-000000004.parquet",
    ]
    # the resumed run records steps 5 and 6 again: whole, once each
    fill(store, range(5, 7), flush_at=(6,))
    rec = read_gradients(tmp_path)
    assert rec.index["step"].tolist() == [s for s in range(1, 7) for _ in "abc"]
    assert not rec.index.duplicated(["id", "step"]).any()


def test_an_empty_store_reads_as_no_records(tmp_path):
    rec = read_gradients(tmp_path)
    assert len(rec) == 0 and rec.features().shape == (0, 0)


def test_columns_and_features_must_have_the_same_rows(tmp_path):
    with pytest.raises(ValueError, match="3 rows but the columns have"):
        GradientStore(tmp_path).append(1, {"id": ["a", "b"], "step": [1, 1]}, np.zeros((3, 4)))
