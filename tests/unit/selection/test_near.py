"""NEAR (DataFlex): every target example's nearest pool examples in turn."""

import math

import datasets
import numpy as np
import pytest

from assay.selection import SelectionContext
from assay.selection.scorers.model_scores import EmbedSim
from assay.selection.scorers.near import Near, near_scores
from assay.selection.selectors import Top

# Targets t0 = (1, 0), t1 = (0, 1) (M = 2). Pool, with cosines to t0 / t1:
#   p0 (1, 0.1)   0.995 / 0.0995
#   p1 (1, 0.2)   0.981 / 0.196
#   p2 (1, 0.3)   0.958 / 0.287
#   p3 (0.5, 1)   0.447 / 0.894
#   p4 (-1, 0)   -1     / 0
# t0's order: p0 p1 p2 p3 p4; t1's: p3 p2 p1 p0 p4. Position = rank·M + j, the earliest over the lists:
#   p0 min(0·2+0, 3·2+1) = 0; p1 min(2, 5) = 2; p2 min(4, 3) = 3; p3 min(6, 1) = 1; p4 min(8, 9) = 8.
POOL = np.array([[1, 0.1], [1, 0.2], [1, 0.3], [0.5, 1], [-1, 0]])
TARGET = np.array([[1.0, 0.0], [0.0, 1.0]])


def test_walk_positions_by_hand():
    assert near_scores(POOL, TARGET, 5).tolist() == [0, -2, -3, -1, -8]
    # scale does not matter: vectors are unit-normalised
    assert near_scores(POOL * 7.0, TARGET * 0.1, 5).tolist() == [0, -2, -3, -1, -8]


def test_unreached_examples_follow_by_best_cosine():
    # K = 1 lists only p0 (t0) and p3 (t1); the rest get −(M·K + 2 − best cosine) = −(4 − best cos)
    s = near_scores(POOL, TARGET, 1)
    expected = [0.0, -(4 - 1 / math.sqrt(1.04)), -(4 - 1 / math.sqrt(1.09)), -1.0, -4.0]
    assert s == pytest.approx(expected, abs=1e-12)
    assert np.argsort(-s, kind="stable").tolist() == [0, 3, 1, 2, 4]


def splits():
    def part(vectors, prefix):
        return datasets.Dataset.from_dict({
            "id": [f"{prefix}{i}" for i in range(len(vectors))], "source": ["x"] * len(vectors),
            "prompt": ["q"] * len(vectors), "completion": ["a"] * len(vectors), "embedding": vectors.tolist(),
        })
    return datasets.DatasetDict({"train": part(POOL, "p"), "val": part(TARGET, "t")})


def test_near_covers_every_target_where_max_cosine_does_not():
    ds = splits()
    ctx = SelectionContext(ds["train"], splits=ds)
    near = Near(embedder="column", neighbours=5, selector=Top(count=2)).select(ctx)
    assert near.kept.tolist() == [True, False, False, True, False]  # p0 for t0, p3 for t1
    # RDS+'s max cosine keeps p0 and p1, both neighbours of t0
    x, y = POOL / np.linalg.norm(POOL, axis=1, keepdims=True), TARGET
    max_cos = (x @ y.T).max(1)
    assert np.argsort(-max_cos)[:2].tolist() == [0, 1]
    assert EmbedSim.card.notes != Near.card.notes and "embed_sim" in Near.card.notes


def test_config_and_bad_values(compose_cfg):
    from assay.config import validate
    from assay.errors import explain

    spec = validate(compose_cfg(["selection=near", "selection.embedder=column", "selection.neighbours=10", "selection.target_sources=[add]"]))
    assert isinstance(spec.selection, Near) and spec.selection.neighbours == 10 and spec.selection.data_columns == ("embedding",)
    with pytest.raises(Exception) as err:
        validate(compose_cfg(["selection=near", "selection.neighbours=0"]))
    line = explain(err.value)
    assert "\n" not in line and "selection.neighbours" in line, line
