"""A mixture is a dict domain -> weight (non-negative, summing to one); here it becomes run overrides.

Every step of mixture search (swarm, propose, validate, DDO) speaks only this dict. How a dict
reaches a training run is one small adapter, :class:`MixtureSpec`: which ``mixture`` option to
select and under which key the weights go (today ``mixture=weights mixture.weights={...}``). When the
mixture axis grows (several sources, token weights), only the spec's defaults change.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from assay.errors import UserError, check

Mixture = dict[str, float]

SUM_TOL = 1e-3
"""A table's weight columns must sum to one within this (rounded CSVs stay valid)."""


def normalise(weights: Mapping[str, float], field_name: str = "mixture") -> Mixture:
    """Non-negative finite weights scaled to sum to one (a user's '{copy:1,add:3}' is a mixture too)."""
    for d, w in weights.items():
        check(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0, f"{field_name}.{d}", w, "weights must be finite and >= 0")
    total = float(sum(weights.values()))
    check(total > 0, field_name, dict(weights), "at least one weight must be > 0")
    return {d: float(w) / total for d, w in weights.items()}


def as_vector(mix: Mapping[str, float], domains: list[str], field_name: str = "mixture") -> np.ndarray:
    unknown = sorted(set(mix) - set(domains))
    if unknown:
        raise UserError(f"{field_name}.{unknown[0]}", mix[unknown[0]], f"unknown domain; domains are {domains}")
    return np.array([float(mix.get(d, 0.0)) for d in domains])


def as_dict(x: np.ndarray, domains: list[str], digits: int = 6) -> Mixture:
    x = np.clip(np.asarray(x, dtype=float), 0, None)
    x = x / x.sum()
    return {d: round(float(v), digits) for d, v in zip(domains, x)}


def parse_mixture(text: str, field_name: str = "mixture") -> Mixture:
    """'{copy:1,add:3}' (Hydra style), JSON, or 'copy=1,add=3'."""
    s = text.strip()
    try:
        if s.startswith("{"):
            try:
                raw = json.loads(s)
            except json.JSONDecodeError:
                inner = s[1:-1]
                raw = {k.strip().strip("'\""): float(v) for k, v in (p.split(":", 1) for p in inner.split(",") if p.strip())}
        else:
            raw = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in s.split(",") if p.strip())}
    except ValueError:
        raise UserError(field_name, text, "write a mixture as '{copy:1,add:3}' or 'copy=1,add=3'") from None
    return {str(k): float(v) for k, v in raw.items()}


@dataclass
class MixtureSpec:
    """How a mixture dict becomes the overrides of a training run."""

    option: str = "weights"
    """The ``mixture`` config option that reads the weights."""
    weights_key: str = "mixture.weights"
    """Dotted key the weights dict is written to."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further dotted keys every run of this mixture gets (e.g. ``mixture.num_examples``)."""

    def overrides(self, mix: Mixture, extra: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        out: dict[str, Any] = {self.weights_key: {d: float(w) for d, w in mix.items() if w > 0}}
        out.update(self.extra)
        out.update(extra or {})
        return out

    def command_line(self, mix: Mixture, extra: Optional[Mapping[str, Any]] = None) -> list[str]:
        """The same overrides as command-line arguments of ``assay-train``."""
        group = self.weights_key.split(".", 1)[0]
        args = [f"{group}={self.option}"]
        for key, value in self.overrides(mix, extra).items():
            args.append(f"{key}={_hydra_value(value)}")
        return args

    def proxy_yaml(self, mix: Mixture, extra: Optional[Mapping[str, Any]] = None, comment: str = "") -> str:
        """A ``@package _global_`` config: one proxy (or proposal) as a file Hydra composes as it is."""
        from omegaconf import OmegaConf

        group = self.weights_key.split(".", 1)[0]
        nested = OmegaConf.create({})
        for key, value in self.overrides(mix, extra).items():
            OmegaConf.update(nested, key, value, force_add=True)
        head = "".join(f"# {line}\n" for line in comment.splitlines())
        body = OmegaConf.to_yaml(nested)
        return f"# @package _global_\n{head}defaults:\n  - override /{group}: {self.option}\n{body}"

    def mixture_yaml(self, mix: Mixture, comment: str = "") -> str:
        """A file for ``conf/mixture/<name>.yaml``: the weights only, on top of the option's schema."""
        from omegaconf import OmegaConf

        group, _, key = self.weights_key.partition(".")
        nested = OmegaConf.create({})
        OmegaConf.update(nested, key, {d: float(w) for d, w in mix.items() if w > 0}, force_add=True)
        for k, v in self.extra.items():
            if k.startswith(group + "."):
                OmegaConf.update(nested, k.split(".", 1)[1], v, force_add=True)
        head = "".join(f"# {line}\n" for line in comment.splitlines())
        return f"{head}defaults:\n  - {self.option}_schema\n  - _self_\n{OmegaConf.to_yaml(nested)}"


def _hydra_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


# --------------------------------------------------------------------------------------------------
# Repetition caps (RegMix's MAXIMUM_USAGE; olmix's repetition factor)


def repetition_caps(sizes: Mapping[str, float], budget: float, max_repetition: float, domains: Iterable[str]) -> np.ndarray:
    """Largest share of each domain in a run that draws ``budget`` examples (or tokens) when no example
    may be used more than ``max_repetition`` times: cap_i = min(1, max_repetition * size_i / budget)."""
    check(budget > 0, "budget", budget, "must be > 0")
    check(max_repetition > 0, "max_repetition", max_repetition, "must be > 0")
    return np.array([min(1.0, max_repetition * float(sizes.get(d, 0.0)) / budget) for d in domains])


def caps_from(args_caps: Optional[str], sizes: Optional[Mapping[str, float]], budget: Optional[float], max_rep: Optional[float], domains: list[str]) -> Optional[np.ndarray]:
    """Caps given directly ('{add:0.3}', others 1) or from pool sizes, budget and repetition limit."""
    if args_caps:
        given = parse_mixture(args_caps, "caps")
        caps = as_vector({d: 1.0 for d in domains} | given, domains, "caps")
        for d, c in given.items():
            check(0 <= c <= 1, f"caps.{d}", c, "a cap is a share in [0, 1]")
        return caps
    if budget is not None:
        check(sizes is not None, "sizes", None, "repetition caps need the domain pool sizes (--sizes or a swarm directory)")
        return repetition_caps(sizes, budget, max_rep or 1.0, domains)
    return None


def check_feasible(caps: Optional[np.ndarray], domains: list[str], floor: Optional[np.ndarray] = None) -> None:
    """Caps whose sum is below one admit no mixture: say so, naming the caps that bind."""
    if caps is None:
        return
    total = float(caps.sum())
    if total < 1 - 1e-9:
        order = np.argsort(caps)
        named = ", ".join(f"{domains[i]}<={caps[i]:.4g}" for i in order)
        raise UserError("caps", named, f"infeasible: the caps sum to {total:.4g} < 1, so every cap binds; raise max_repetition, add data, or lower the budget")
    if floor is not None and float(floor.sum()) > 1 + 1e-9:
        raise UserError("min_weight", float(floor.sum()), "infeasible: the per-domain minimum weights sum to more than 1")
    if floor is not None:
        bad = np.flatnonzero(floor > caps + 1e-12)
        if bad.size:
            i = int(bad[0])
            raise UserError(f"caps.{domains[i]}", float(caps[i]), f"infeasible: below the minimum weight {floor[i]:.4g} of that domain")


def entropy_kl(x: np.ndarray, prior: np.ndarray) -> float:
    """KL(x || prior) with 0 log 0 = 0."""
    m = x > 0
    return float(np.sum(x[m] * np.log(x[m] / np.maximum(prior[m], 1e-300))))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.rename(path)


def project_capped_rows(X: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row onto {0 <= x <= cap, Σx = 1} (bisection on the shift τ)."""
    lo = (X - caps[None, :]).min(axis=1) - 1.0
    hi = X.max(axis=1)
    for _ in range(60):
        tau = (lo + hi) / 2
        s = np.clip(X - tau[:, None], 0, caps[None, :]).sum(axis=1)
        lo = np.where(s > 1, tau, lo)
        hi = np.where(s > 1, hi, tau)
    return np.clip(X - hi[:, None], 0, caps[None, :])
