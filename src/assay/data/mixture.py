"""Mixtures (config group ``mixture``): how much of each domain the run trains on.

A domain is a value of the training split's ``source`` column: a skill of the skills corpus, or a
source of ``data=sources``. Weights are shares of **examples** or of **tokens** (``mixture.unit``;
pretraining mixtures are token shares), multiplied by the data's own ``data.sources.<d>.weight``.

Two ways to realise them:

- **static** (``single``, ``weights``, ``temperature``): the training pool is resampled once, a
  pure, seeded function of the per-domain pool sizes. Repetition is explicit and capped
  (``max_repetition``, per domain ``max_epochs``): a repeated copy gets the id ``<id>~<k>``.
- **drawn** (``schedule`` and the online mixers of ``assay.mixing``): the pool stays as it is
  and the sampler draws every batch position's domain by the weights in effect at that step
  (``assay.mixing.sampler.DomainSampler``); the weights change over training by a schedule or
  by a callback. The caps then bound the epochs over each domain's rows across the whole run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from assay.lazy import datasets
import numpy as np
from omegaconf import II, MISSING

from assay.cards import MethodCard
from assay.data.allocation import allocate, allocate_tokens, apply_domain_weights, resample, tokens_per_domain
from assay.data.weights import Stage, check_weights, normalise_shares, stage_at, temperature_weights
from assay.errors import UserError, check
from assay.registry import register

UNITS = ("examples", "tokens")


@dataclass
class MixtureConfig:
    name: str = MISSING
    unit: str = "examples"
    """What the weights are shares of: ``examples`` or ``tokens`` (a domain of long documents gets
    fewer examples for the same token share)."""
    num_examples: Optional[int] = None
    """Static mixtures: total training examples after mixing (default: as many as fit the caps)."""
    num_tokens: Optional[int] = None
    """Static token mixtures: total training tokens after mixing (default: as many as fit the caps)."""
    max_repetition: Optional[float] = None
    """The repetition cap of every domain, in epochs over its examples (or tokens). Static mixtures:
    how often the resampled pool may repeat a domain (null = 1, sample without replacement).
    Drawn mixtures: epochs over the whole run (null = no cap). RegMix caps at 15 epochs, OLMo-core's
    source mixtures at a per-source factor."""
    max_epochs: dict[str, float] = field(default_factory=dict)
    """Per-domain caps overriding ``max_repetition``, e.g. ``{code: 4, wiki: 1}``."""
    seed: int = II("seed")
    drawn: ClassVar[bool] = False
    """True: the sampler draws domains by (changing) weights; false: the pool is resampled once."""

    def __post_init__(self) -> None:
        check(self.unit in UNITS, "mixture.unit", self.unit, f"must be one of {list(UNITS)}")
        if self.num_examples is not None:
            check(self.num_examples > 0, "mixture.num_examples", self.num_examples, "must be a positive integer")
        if self.num_tokens is not None:
            check(self.num_tokens > 0, "mixture.num_tokens", self.num_tokens, "must be a positive integer")
            check(self.unit == "tokens", "mixture.num_tokens", self.num_tokens, "needs mixture.unit=tokens (or give mixture.num_examples)")
        if self.max_repetition is not None:
            check(self.max_repetition > 0 and math.isfinite(self.max_repetition), "mixture.max_repetition", self.max_repetition, "must be a finite number > 0 (epochs), or null")
        for d, cap in self.max_epochs.items():
            check(isinstance(cap, (int, float)) and cap > 0 and math.isfinite(cap), f"mixture.max_epochs.{d}", cap, "must be a finite number of epochs > 0")

    # ---- what every mixture answers --------------------------------------------------------------
    @property
    def needs_lengths(self) -> bool:
        """Static token mixtures need each example's token count before they can resample."""
        return self.unit == "tokens" and not self.drawn

    def named_domains(self) -> list[str]:
        """Domains this mixture names (weights, caps, schedule stages): each must exist."""
        return sorted(self.max_epochs)

    def check_domains(self, domains: list[str], where: str = "data") -> None:
        for name in self.named_domains():
            if name not in domains:
                field_ = "mixture.max_epochs" if name in self.max_epochs else "mixture.weights"
                raise UserError(field_, name, f"is not a domain of this data; domains are {sorted(domains)}")

    def cap(self, domain: str) -> float:
        if domain in self.max_epochs:
            return float(self.max_epochs[domain])
        if self.max_repetition is not None:
            return float(self.max_repetition)
        return math.inf if self.drawn else 1.0

    def proportions(self, sizes: dict[str, float]) -> Optional[dict[str, float]]:
        """Target share per domain (in ``unit``), or None to keep the pool as it is. ``sizes`` are
        the domains' examples (or tokens, for token mixtures)."""
        return None

    def apply(self, train: datasets.Dataset, domain_weights: Optional[dict[str, float]] = None,
              lengths: Optional[np.ndarray] = None) -> tuple[datasets.Dataset, dict[str, int]]:
        """Static mixing: resample ``train`` (``lengths``: tokens per row, for token mixtures)."""
        sources = train["source"]
        sizes: dict[str, int] = {}
        for s in sources:
            sizes[s] = sizes.get(s, 0) + 1
        self.check_domains(list(sizes))
        if self.drawn:
            return train, sizes
        tokens = tokens_per_domain(sources, lengths) if self.unit == "tokens" else None
        props = self.proportions(tokens if tokens is not None else sizes)
        reweighted = domain_weights and any(w != 1.0 for w in domain_weights.values())
        if props is None and not reweighted and not self.max_epochs and (self.max_repetition or 1) >= 1:
            return train, sizes
        if props is None:
            props = normalise_shares(dict(tokens if tokens is not None else sizes))
        props = apply_domain_weights(props, domain_weights)
        if tokens is not None:
            counts = allocate_tokens(props, sizes, tokens, self.num_tokens, self.cap, self.num_examples)
        else:
            counts = allocate(props, sizes, self.num_examples, self.cap)
        return resample(train, sources, sizes, counts, self.seed), {s: c for s, c in counts.items() if c > 0}

    # ---- drawn mixtures (the sampler asks these) ----------------------------------------------------
    def weights_at(self, progress: float, sizes: dict[str, float]) -> dict[str, float]:
        """The domain weights at ``progress`` ∈ [0, 1) of training (drawn mixtures)."""
        return self.proportions(sizes) or normalise_shares(dict(sizes))

    def callbacks(self, context) -> list:
        """Online mixers: the callback that updates the sampler's weights during training."""
        return []


@register("mixture", "single")
@dataclass
class SingleMixture(MixtureConfig):
    """Use the training pool as it is (natural proportions; data.sources.<d>.weight rescales them)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/data/test_mixture.py: the pool is kept",
        notes="The natural proportions of the pool: the baseline for every mixture (DoReMi's and RegMix's reference mixture).",
    )

    name: str = "single"


@register("mixture", "weights")
@dataclass
class WeightsMixture(MixtureConfig):
    """Explicit per-domain weights (normalised to sum to one; unlisted domains get zero), given on
    the command line: ``mixture=weights mixture.weights='{copy:1,add:3}'``."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/data/test_mixture.py: counts realised by largest-remainder rounding, repetition capped",
        notes="Explicit per-domain weights, e.g. a mixture proposed by assay-mix; realised by resampling the pool once.",
    )

    name: str = "weights"
    weights: dict[str, float] = field(default_factory=dict)
    weights_from: Optional[str] = None
    """Read the weights from a file instead: a DoReMi proxy run's directory or its ``mixing.json``
    (its ``average_weights``, the recipe's output), or a JSON file with a ``weights`` mapping (what
    ``assay-mix propose`` writes). Read when the run starts, so a recipe's earlier stage may write it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weights_from:
            check(not self.weights, "mixture.weights", dict(self.weights), "give the weights or mixture.weights_from, not both")
        else:
            check_weights("mixture.weights", self.weights)

    def named_domains(self) -> list[str]:
        return sorted(set(self.weights) | set(self.max_epochs))

    def read_weights(self) -> dict[str, float]:
        """The weights, from ``weights_from`` when it is set."""
        if not self.weights_from:
            return dict(self.weights)
        path = Path(self.weights_from).expanduser()
        field_ = "mixture.weights_from"
        if path.is_dir():
            path = path / "mixing.json"
        if not path.is_file():
            raise UserError(field_, self.weights_from, "has no weights: give a DoReMi proxy run directory (with mixing.json) or a JSON file with a 'weights' mapping")
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(field_, str(path), f"is not JSON ({exc})") from None
        weights = data.get("average_weights") or data.get("weights") if isinstance(data, dict) else None
        if not isinstance(weights, dict) or not weights:
            raise UserError(field_, str(path), "holds neither 'average_weights' (a DoReMi proxy run) nor 'weights'")
        check_weights(field_, weights)
        return {str(k): float(v) for k, v in weights.items()}

    def proportions(self, sizes: dict[str, float]) -> dict[str, float]:
        weights = self.read_weights()
        unknown = sorted(set(weights) - set(sizes))
        if unknown:
            raise UserError("mixture.weights", unknown[0], f"is not a domain of this data; domains are {sorted(sizes)}")
        total = sum(weights.values())
        return {s: weights.get(s, 0.0) / total for s in sizes}


@register("mixture", "temperature")
@dataclass
class TemperatureMixture(MixtureConfig):
    """Temperature sampling: p_i ∝ size_i^(1/T); T=1 natural, T→∞ uniform over domains."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Conneau & Lample 2019, Cross-lingual Language Model Pretraining (XLM, NeurIPS 2019): q_i ∝ p_i^α",
        arxiv="1901.07291",
        code=None,
        defaults={"temperature": "2.0 (XLM: α = 1/T = 0.5, from memory of the paper, not re-checked): follows"},
        deviations=(
            "Applied to examples (or tokens, unit=tokens) and realised by resampling the pool once under the repetition cap; "
            "XLM samples sentences per batch from the multinomial.",
        ),
        checked="tests/unit/mixing/test_mixing_rules.py: the weights by hand; tests/unit/data/test_mixture.py: sizes flattened",
    )

    name: str = "temperature"
    temperature: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.temperature > 0, "mixture.temperature", self.temperature, "must be > 0")

    def proportions(self, sizes: dict[str, float]) -> dict[str, float]:
        names = list(sizes)
        return dict(zip(names, temperature_weights(np.array([sizes[s] for s in names], dtype=np.float64), self.temperature).tolist()))


@register("mixture", "schedule")
@dataclass
class ScheduleMixture(MixtureConfig):
    """Weights that change over training: piecewise stages, or upsampling domains for the last fraction:
    ``mixture=schedule mixture.upsample=[add] mixture.last_fraction=0.2 mixture.factor=3``, or
    ``mixture.stages='[{until:0.8,weights:{copy:1}},{until:1.0,weights:{add:1}}]'``."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Blakeney et al. 2024, Does your data spark joy? (domain upsampling at the end of training; ICML 2024 ES-FoMo "
              "workshop): the upsample form",
        arxiv="2406.03476",
        code=None,
        defaults={
            "last_fraction": "0.2 (the paper: 10-20% the sweet spot, ablated 5-30%): follows",
            "factor": "3 (the paper's upsampled mix is not known to us): assay's choice",
        },
        deviations=(
            "Upsampling multiplies the natural proportions of the chosen domains by factor for the last fraction of steps; "
            "the paper's exact end mixture is unverified.",
        ),
        checked="tests/unit/data/test_mixture.py: stages and upsampling",
        notes="With stages it is a general piecewise-constant schedule of weights (no paper). The upsample form is assay's one "
              "end-of-training upsampling: the end mixture is drawn with replacement, as the paper samples it; the former "
              "ordering=upsample_end (a reordering of the kept rows, no paper code) was removed in its favour. No code was found "
              "(research note).",
    )

    name: str = "schedule"
    stages: list[Any] = field(default_factory=list)
    """``[{until: 0.8, weights: {web: 9, code: 1}}, {until: 1.0, weights: {web: 1, code: 1}}]``:
    each stage's weights hold from the previous stage's ``until`` (a fraction of the training steps)
    to its own; the last must reach 1. An empty ``weights`` = natural proportions."""
    upsample: list[str] = field(default_factory=list)
    """Without ``stages``: natural proportions, then for the last ``last_fraction`` of steps these
    domains' weights × ``factor`` (Blakeney et al. 2024, arXiv 2406.03476: "domain upsampling" at
    the end of training, 10-20% the sweet spot)."""
    last_fraction: float = 0.2
    factor: float = 3.0
    drawn: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 < self.last_fraction < 1.0, "mixture.last_fraction", self.last_fraction, "must be in (0, 1)")
        check(self.factor > 0 and math.isfinite(self.factor), "mixture.factor", self.factor, "must be a finite number > 0")
        if not self.stages:
            check(len(self.upsample) > 0, "mixture.stages", [], "give stages [{until, weights}, ...] or domains to upsample at the end (mixture.upsample)")
        self.parsed = self._parse()

    def _parse(self) -> list[Stage]:
        if not self.stages:
            return [Stage(1.0 - self.last_fraction, {}), Stage(1.0, {"__upsample__": 1.0})]
        out, previous = [], 0.0
        for i, raw in enumerate(self.stages):
            raw = dict(raw) if hasattr(raw, "items") else raw
            if not isinstance(raw, dict) or "until" not in raw:
                raise UserError(f"mixture.stages[{i}]", raw, "must be a mapping {until: <fraction of steps>, weights: {domain: weight}}")
            unknown = sorted(set(raw) - {"until", "weights"})
            if unknown:
                raise UserError(f"mixture.stages[{i}].{unknown[0]}", raw[unknown[0]], "is not a stage field; allowed: ['until', 'weights']")
            until = raw["until"]
            if not isinstance(until, (int, float)) or not previous < until <= 1.0:
                raise UserError(f"mixture.stages[{i}].until", until, f"must be in ({previous:g}, 1]: stages are in order and end at 1")
            weights = dict(raw.get("weights") or {})
            if weights:
                check_weights(f"mixture.stages[{i}].weights", weights)
            out.append(Stage(float(until), weights))
            previous = float(until)
        if out[-1].until < 1.0:
            raise UserError(f"mixture.stages[{len(out) - 1}].until", out[-1].until, f"the stages cover training up to {out[-1].until:g} only; the last stage must end at 1")
        return out

    def named_domains(self) -> list[str]:
        names = set(self.max_epochs) | set(self.upsample)
        for s in self.parsed:
            names |= {k for k in s.weights if k != "__upsample__"}
        return sorted(names)

    def check_domains(self, domains: list[str], where: str = "data") -> None:
        for name in self.named_domains():
            if name not in domains:
                field_ = "mixture.upsample" if name in self.upsample else ("mixture.max_epochs" if name in self.max_epochs else "mixture.stages")
                raise UserError(field_, name, f"is not a domain of this data; domains are {sorted(domains)}")

    def weights_at(self, progress: float, sizes: dict[str, float]) -> dict[str, float]:
        stage = self.parsed[stage_at(self.parsed, progress)]
        natural = normalise_shares(dict(sizes))
        if "__upsample__" in stage.weights:
            return normalise_shares({s: p * (self.factor if s in self.upsample else 1.0) for s, p in natural.items()})
        if not stage.weights:
            return natural
        return normalise_shares({s: float(stage.weights.get(s, 0.0)) for s in sizes})


def check_run(spec) -> None:
    """Cross-group checks of the mixture, before anything is built: the domains it names exist,
    and a drawn mixture is not combined with re-selection during training (both decide which rows
    the sampler serves)."""
    domains = spec.data.domain_names()
    if domains is not None:
        spec.mixture.check_domains(domains)
    if spec.mixture.drawn and getattr(spec.selection, "rescore_every", 0):
        raise UserError("selection.rescore_every", spec.selection.rescore_every, f"re-selection during training does not combine with mixture={spec.mixture.name}, which draws domains itself; set it to 0")
