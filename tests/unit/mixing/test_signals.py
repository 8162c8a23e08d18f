"""The signals a mixer declares are what the OnlineMixing callback gathers (assay.mixing.signals):
one gatherer per signal, accumulated per batch, saved in the checkpoint under the keys the callback
always used (sum, count, excess), and nothing gathered that the mixer does not read."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from assay.mixing.base import Mixer
from assay.mixing.callbacks import OnlineMixing
from assay.mixing.signals import SignalContext, gatherers


class _Reads(Mixer):
    def __init__(self, domains, initial, signals):
        super().__init__(domains, initial)
        self.signals = signals


def _ctx(mixer, **mixture):
    return SignalContext(spec=None, mixture=SimpleNamespace(name="x", **mixture), mixer=mixer, examples=None, tokenized=None,
                         domains=mixer.domains, pad_id=0, cache_dir=None)


def test_only_declared_signals_are_gathered_train_loss_first():
    mixer = _Reads(["a", "b"], np.ones(2), ("train_loss",))
    assert [g.name for g in gatherers(_ctx(mixer))] == ["train_loss"]
    mixer.signals = ("excess_loss",)
    names = [g.name for g in gatherers(_ctx(mixer, reference_losses=lambda ctx: {"1": 1.0}))]
    assert names == ["train_loss", "excess_loss"]


def test_an_unknown_signal_is_refused():
    with pytest.raises(TypeError, match="gathered are"):
        gatherers(_ctx(_Reads(["a"], np.ones(1), ("gradient_norm",))))


def test_excess_loss_per_batch_and_its_checkpoint_keys(tmp_path):
    mixer = _Reads(["a", "b"], np.ones(2), ("train_loss", "excess_loss"))
    signals = gatherers(_ctx(mixer, reference_losses=lambda ctx: {"1": 1.0, "2": 3.0, "3": 0.5}))
    cb = OnlineMixing(mixer, update_every=10, warmup_steps=0, run_dir=tmp_path, signals=signals)
    for s in signals:
        s.on_batch(np.array([2.0, 2.0, 2.0]), np.array([0, 0, 1]), {"ids": ["1", "2", "3"]})
    train, excess = signals
    assert train.value(None, train.count).tolist() == [2.0, 2.0]
    assert excess.value(None, train.count).tolist() == [0.5, 1.5]  # (max(2-1,0) + max(2-3,0)) / 2, max(2-0.5,0)
    state = cb.state_dict()
    assert set(state) == {"mixer", "history", "last_step", "sum", "count", "excess"}
    again = OnlineMixing(mixer, 10, 0, tmp_path, gatherers(_ctx(mixer, reference_losses=lambda ctx: {})))
    again.load_state_dict(state)
    assert again.signals[1].excess.tolist() == [1.0, 1.5] and again.signals[0].count.dtype == np.int64
