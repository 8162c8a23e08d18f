"""What every online mixer shares: the config base ``OnlineMixture`` (update cadence, warm-up and
initial weights), the runtime base ``Mixer`` and ``DomainStats``, what a mixer reads at each update.

A method is one module of this package (``odm``, ``skill_it``, ``doremi_resample``): its registered
config (a subclass of ``OnlineMixture`` whose ``mixer()`` builds the runtime), its ``Mixer`` subclass
and its update rule, side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from assay.data.mixture import MixtureConfig
from assay.data.weights import check_weights, normalise, normalise_shares, temperature_weights
from assay.errors import UserError, check

INITS = ("uniform", "natural", "temperature", "weights")


@dataclass
class OnlineMixture(MixtureConfig):
    update_every: int = 10
    """Optimizer steps between weight updates."""
    warmup_steps: int = 0
    """No update before this step (ODM's released runs wait 2,000 steps at scale)."""
    init: str = "uniform"
    """Initial weights: ``uniform``, ``natural`` (pool shares), ``temperature`` (``init_temperature``)
    or ``weights`` (``init_weights``)."""
    init_temperature: float = 2.0
    init_weights: dict[str, float] = field(default_factory=dict)
    drawn: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.update_every > 0, "mixture.update_every", self.update_every, "must be a positive number of steps")
        check(self.warmup_steps >= 0, "mixture.warmup_steps", self.warmup_steps, "must be >= 0")
        check(self.init in INITS, "mixture.init", self.init, f"must be one of {list(INITS)}")
        check(self.init_temperature > 0, "mixture.init_temperature", self.init_temperature, "must be > 0")
        if self.init == "weights":
            check(len(self.init_weights) > 0, "mixture.init_weights", {}, "mixture.init=weights needs the weights")
            check_weights("mixture.init_weights", self.init_weights)

    def named_domains(self) -> list[str]:
        return sorted(set(self.max_epochs) | set(self.init_weights))

    def check_domains(self, domains: list[str], where: str = "data") -> None:
        for name in self.named_domains():
            if name not in domains:
                field_ = "mixture.max_epochs" if name in self.max_epochs else "mixture.init_weights"
                raise UserError(field_, name, f"is not a domain of this data; domains are {sorted(domains)}")

    def weights_at(self, progress: float, sizes: dict[str, float]) -> dict[str, float]:
        names = list(sizes)
        if self.init == "uniform":
            return {s: 1.0 / len(names) for s in names}
        if self.init == "natural":
            return normalise_shares(dict(sizes))
        if self.init == "temperature":
            return dict(zip(names, temperature_weights(np.array([sizes[s] for s in names], dtype=np.float64), self.init_temperature).tolist()))
        return normalise_shares({s: float(self.init_weights.get(s, 0.0)) for s in names})

    def mixer(self, domains: list[str], initial: np.ndarray):  # pragma: no cover - every mixer overrides it
        raise TypeError(f"{type(self).__name__} does not build a mixer()")



@dataclass
class DomainStats:
    """What a mixer reads at an update: the examples per domain trained on since the last update and
    the per-domain values of the signals it declares (``stats["excess_loss"]``; ``train_loss`` always)."""

    count: np.ndarray
    """Examples seen per domain since the last update."""
    values: dict[str, np.ndarray] = field(default_factory=dict)
    """Signal name -> per-domain array (nan where a domain was absent); ``assay.mixing.signals``."""

    def __getitem__(self, signal: str) -> np.ndarray:
        return self.values[signal]

    @property
    def present(self) -> np.ndarray:
        return self.count > 0


class Mixer:
    """An online mixer: ``update(stats)`` returns the new domain weights and what to log
    (``mixing/<name>/<domain>`` for each array it returns)."""

    signals: ClassVar[tuple[str, ...]] = ("train_loss",)
    """The per-domain signals ``update`` reads from ``DomainStats``, gathered by the ``OnlineMixing``
    callback: ``train_loss``, ``excess_loss``, ``val_loss``, ``graph`` (``assay.mixing.signals`` says how
    each is gathered and what the config provides for it). ``train_loss`` and the counts are always there."""

    def __init__(self, domains: list[str], initial: np.ndarray):
        self.domains, self.weights = list(domains), normalise(initial)

    def update(self, stats: DomainStats) -> dict[str, np.ndarray]:  # pragma: no cover - every mixer overrides it
        raise TypeError(f"{type(self).__name__} does not implement update()")

    def state_dict(self) -> dict:
        return {"weights": self.weights.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.weights = np.asarray(state["weights"], dtype=np.float64)

    def outputs(self) -> dict[str, dict[str, float]]:
        """What the run reports at the end (final weights; DoReMi adds their average)."""
        return {"final_weights": dict(zip(self.domains, self.weights.tolist()))}

