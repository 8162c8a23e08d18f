"""The signals an online mixer reads, each with its one gatherer.

A mixer declares what it reads (``Mixer.signals``, e.g. ``("train_loss", "excess_loss")``); the
``OnlineMixing`` callback gathers exactly those, and nothing in the wiring names a method. Each gatherer
says how its signal is prepared before training, accumulated per training batch, summed over ranks,
turned into per-domain values at an update, and saved in the checkpoint:

- ``train_loss``  mean per-example training loss since the last update, and the examples per domain
  (every mixer's ``DomainStats.count``; always gathered, and written to ``mixing.csv`` for every mixer)
- ``excess_loss`` mean clipped excess max(ℓ − ℓ_ref, 0) over per-example reference losses that the
  mixture's config provides (``reference_losses(ctx)``, e.g. ``doremi_resample``'s cached reference run)
- ``val_loss``    per-domain validation loss, evaluated fresh at each update on ``mixture.probe_examples``
  validation examples per domain
- ``graph``       a domains x domains graph set on the mixer at the start of training when it has none
  (``mixer.graph``), by the probe the mixture's config builds (``graph_probe(ctx, mixer)``)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from assay.errors import UserError


@dataclass
class SignalContext:
    """What a gatherer may read while it prepares (before training)."""

    spec: Any
    mixture: Any
    mixer: Any
    examples: Any
    tokenized: Any
    domains: list[str]
    pad_id: int
    cache_dir: Path
    _val: Optional[list[dict]] = field(default=None, repr=False)

    def batches(self, split: str) -> list[dict]:
        """``mixture.probe_examples`` examples of each domain of ``split``, in eval-size batches."""
        from assay.mixing.callbacks import domain_batches

        spec = self.spec
        return domain_batches(self.tokenized[split], self.domains, self.mixture.probe_examples, self.pad_id, spec.data, spec.objective.collation, False)

    def validation_batches(self) -> list[dict]:
        """The validation batches every validation-loss evaluation reads (built once)."""
        if self._val is None:
            self._val = self.batches("val")
        return self._val


class Signal:
    """A gatherer. ``sums`` are the arrays accumulated per batch (summed over ranks before an update,
    saved in the checkpoint under their names); ``value`` is the per-domain signal at an update."""

    name: ClassVar[str]
    sums: ClassVar[tuple[str, ...]] = ()

    def __init__(self, k: int):
        self.k = k
        self.reset()

    def prepare(self, ctx: SignalContext) -> None:
        """Before training: what the gatherer needs (reference losses, validation batches, a probe)."""

    def on_train_start(self, module, mixer) -> None:
        """At the start of training, with the starting model."""

    def on_batch(self, losses: np.ndarray, domains: np.ndarray, batch: dict) -> None:
        """After every training batch: ``losses`` per example, ``domains`` their domain indices."""

    def reset(self) -> None:
        for name in self.sums:
            setattr(self, name, np.zeros(self.k, dtype=np.int64 if name == "count" else np.float64))

    def value(self, module, count: np.ndarray) -> Optional[np.ndarray]:
        return None

    def state_dict(self) -> dict:
        return {name: getattr(self, name).tolist() for name in self.sums}

    def load_state_dict(self, state: dict) -> None:
        for name in self.sums:
            setattr(self, name, np.asarray(state[name], dtype=np.int64 if name == "count" else np.float64))


def _mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class TrainLoss(Signal):
    name = "train_loss"
    sums = ("sum", "count")

    def on_batch(self, losses, domains, batch) -> None:
        np.add.at(self.sum, domains, losses)
        np.add.at(self.count, domains, 1)

    def value(self, module, count):
        return _mean(self.sum, count)


class ExcessLoss(Signal):
    name = "excess_loss"
    sums = ("excess",)

    def prepare(self, ctx: SignalContext) -> None:
        provide = getattr(ctx.mixture, "reference_losses", None)
        if provide is None:
            raise UserError("mixture", ctx.mixture.name, "its mixer reads excess_loss but the config provides no reference_losses(ctx)")
        self.reference: dict[str, float] = provide(ctx)

    def on_batch(self, losses, domains, batch) -> None:
        ref = np.array([self.reference[i] for i in batch["ids"]])
        np.add.at(self.excess, domains, np.maximum(losses - ref, 0.0))

    def value(self, module, count):
        return _mean(self.excess, count)


class ValLoss(Signal):
    name = "val_loss"

    def prepare(self, ctx: SignalContext) -> None:
        self.batches, self.domains = ctx.validation_batches(), ctx.domains

    def value(self, module, count):
        from assay.mixing.callbacks import domain_losses

        return domain_losses(module, self.batches, self.domains)


class Graph(Signal):
    name = "graph"

    def prepare(self, ctx: SignalContext) -> None:
        provide = getattr(ctx.mixture, "graph_probe", None)
        self.probe: Optional[Callable] = None if provide is None or ctx.mixer.graph is not None else provide(ctx)

    def on_train_start(self, module, mixer) -> None:
        if self.probe is not None and mixer.graph is None:
            mixer.graph = self.probe(module)


SIGNALS: dict[str, type[Signal]] = {s.name: s for s in (TrainLoss, ExcessLoss, ValLoss, Graph)}
"""Every signal a mixer may declare, by name."""


def gatherers(ctx: SignalContext) -> list[Signal]:
    """The gatherers of what ``ctx.mixer`` declares (``train_loss`` always, first), prepared in order."""
    names = ["train_loss", *[s for s in ctx.mixer.signals if s != "train_loss"]]
    unknown = [s for s in names if s not in SIGNALS]
    if unknown:
        raise TypeError(f"{type(ctx.mixer).__name__}.signals names {unknown}; the signals gathered are {sorted(SIGNALS)}")
    out = [SIGNALS[s](len(ctx.domains)) for s in names]
    for g in out:
        g.prepare(ctx)
    return out
