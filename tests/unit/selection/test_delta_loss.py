"""delta_loss (DataFlex): the drop of each example's recorded loss between its first and last presentations."""

import datasets
import numpy as np
import pandas as pd
import pytest

from assay.dynamics.store import PerSampleStore
from assay.errors import UserError
from assay.selection import SelectionContext
from assay.selection.scorers.delta_loss import DeltaLoss, loss_deltas
from assay.selection.selectors import Top

# Losses per presentation (steps 0..3):
#   a: 3.0 2.0 1.5 1.0  -> Δ = 3.0 − 1.0 = 2.0;  windows of 2: (3.0+2.0)/2 − (1.5+1.0)/2 = 1.25
#   b: 1.0 0.9 0.8 0.7  -> Δ = 0.3;                (0.95) − (0.75) = 0.2
#   c: 4.0 4.1 4.0 4.2  -> Δ = −0.2;               (4.05) − (4.1) = −0.05   (never learned: noise)
#   d: 0.5 0.6 0.4 0.5  -> Δ = 0.0;                (0.55) − (0.45) = 0.1
LOSSES = {"a": [3.0, 2.0, 1.5, 1.0], "b": [1.0, 0.9, 0.8, 0.7], "c": [4.0, 4.1, 4.0, 4.2], "d": [0.5, 0.6, 0.4, 0.5]}


def write_store(root, rows):
    store = PerSampleStore(root / "dynamics")
    for step, group in pd.DataFrame(rows).groupby("step"):
        store.append(int(step), {k: group[k].tolist() for k in group.columns})
    store.flush()


def rows():
    # step order is what counts, not the order the records were written in
    return [{"id": i, "step": s, "epoch": s, "loss": v[s]} for i, v in LOSSES.items() for s in (2, 0, 3, 1)]


def test_deltas_by_hand():
    one = loss_deltas(pd.DataFrame(rows()), 1)
    assert one.to_dict() == pytest.approx({"a": 2.0, "b": 0.3, "c": -0.2, "d": 0.0})
    two = loss_deltas(pd.DataFrame(rows()), 2)
    assert two.to_dict() == pytest.approx({"a": 1.25, "b": 0.2, "c": -0.05, "d": 0.1})


def test_selection_keeps_the_largest_drops_and_flags_the_never_learned(tmp_path):
    write_store(tmp_path, rows())
    train = datasets.Dataset.from_dict({"id": ["d", "c", "b", "a"], "source": ["x"] * 4, "is_corrupted": [False, True, False, False]})
    sel = DeltaLoss(dynamics_from=str(tmp_path), selector=Top(count=2)).select(SelectionContext(train))
    assert sel.scores == pytest.approx([0.0, -0.2, 0.3, 2.0])
    assert sel.kept.tolist() == [False, False, True, True]
    # the noisy example is the one whose loss did not drop: the lowest score
    assert sel.metadata["detection"]["is_corrupted"]["auroc"] == 1.0
    windowed = DeltaLoss(dynamics_from=str(tmp_path), presentations=2, selector=Top(count=2)).select(SelectionContext(train))
    assert windowed.scores == pytest.approx([0.1, -0.05, 0.2, 1.25])


def test_single_presentations_and_unseen_ids(tmp_path):
    write_store(tmp_path / "once", [{"id": i, "step": 0, "epoch": 0, "loss": 1.0} for i in "ab"])
    train = datasets.Dataset.from_dict({"id": ["a", "b"], "source": ["x"] * 2})
    with pytest.raises(UserError, match="at least two presentations"):
        DeltaLoss(dynamics_from=str(tmp_path / "once")).select(SelectionContext(train))
    write_store(tmp_path / "some", rows())
    more = datasets.Dataset.from_dict({"id": ["a", "zz"], "source": ["x"] * 2})
    with pytest.raises(UserError, match="no record for 1 of 2"):
        DeltaLoss(dynamics_from=str(tmp_path / "some")).select(SelectionContext(more))
    lowest = DeltaLoss(dynamics_from=str(tmp_path / "some"), unseen="lowest", selector=Top(count=1)).select(SelectionContext(more))
    assert lowest.scores[0] == pytest.approx(2.0) and np.isneginf(lowest.scores[1])


def test_config_and_bad_values(compose_cfg):
    from assay.config import validate
    from assay.errors import explain

    spec = validate(compose_cfg(["selection=delta_loss", "selection.dynamics_from=/tmp/x", "selection.presentations=3"]))
    assert isinstance(spec.selection, DeltaLoss) and spec.selection.presentations == 3 and spec.selection.reads_dynamics
    with pytest.raises(Exception) as err:
        validate(compose_cfg(["selection=delta_loss", "selection.presentations=0"]))
    line = explain(err.value)
    assert "\n" not in line and "selection.presentations" in line, line
