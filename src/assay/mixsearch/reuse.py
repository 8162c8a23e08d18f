"""Mixture reuse (olmix, AllenAI): when domains are added, removed or revised, keep the earlier proposal's
relative ratios among the unchanged domains frozen, search only over the changed part, and expand back.

olmix (``configs/mixture_reuse_case_study``, ``olmix/generate/synthesize_mixture.py``,
``olmix/fit/utils.py:expand_collapsed_weights``): the unchanged domains become one *virtual* domain whose
inner ratios are pinned (a source whose topics carry ``weight:``); the swarm samples that virtual domain's
total share together with the free domains; the fit and the proposer see the collapsed domains; the
proposal is expanded leaf by leaf as ``w_leaf = ratio_leaf · w_virtual``. A removed domain needs no new
runs (its weight is dropped and the rest renormalised).

The same collapse/expand is a two-level (source → topic) mixture: :func:`flatten_levels`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from assay.cards import MethodCard
from assay.errors import UserError, check

VIRTUAL = "frozen"
"""Name of the virtual domain that stands for the frozen unchanged domains."""

RATIO_TOL = 1e-4


@dataclass
class Frozen:
    """The unchanged domains and their pinned relative ratios (summing to 1)."""

    ratios: dict[str, float]
    name: str = VIRTUAL

    def collapsed(self, domains: Sequence[str]) -> list[str]:
        """The searched domains: the virtual one first, then every domain that is not frozen."""
        return [self.name] + [d for d in domains if d not in self.ratios]


def parse_freeze(text: str, domains: Sequence[str]) -> Frozen:
    """``--freeze PROPOSAL.json[:changed,...]``: the earlier proposal, then the domains revised since."""
    path, changed = text, ""
    if not Path(text).is_file() and ":" in text:
        path, changed = text.rsplit(":", 1)
    return frozen_from_proposal(path, domains, [c.strip() for c in changed.split(",") if c.strip()])


def frozen_from_proposal(path: str | Path, domains: Sequence[str], changed: Sequence[str] = ()) -> Frozen:
    """Freeze the ratios of an earlier proposal among the domains that still exist and did not change."""
    path = Path(path)
    check(path.is_file(), "--freeze", str(path), "is not a file (an earlier proposal's .json, from `assay-mix propose`)")
    data = json.loads(path.read_text())
    weights = data.get("weights", data) if isinstance(data, dict) else None
    check(isinstance(weights, dict) and weights, "--freeze", str(path), "has no weights (write one with `assay-mix propose`)")
    unknown = [c for c in changed if c not in domains]
    check(not unknown, "--freeze", ",".join(unknown), f"unknown domain; domains are {list(domains)}")
    keep = {d: float(w) for d, w in weights.items() if d in domains and d not in changed and float(w) > 0}
    check(len(keep) >= 1, "--freeze", str(path), f"no unchanged domain with weight > 0 is among {list(domains)}: nothing to freeze")
    free = [d for d in domains if d not in keep]
    check(len(free) >= 1, "--freeze", str(path), "every domain is frozen: name the revised domains after a colon (PROPOSAL.json:code,math)")
    check(VIRTUAL not in domains, "--freeze", VIRTUAL, "a domain is named like the virtual frozen domain; rename it")
    total = sum(keep.values())
    return Frozen({d: w / total for d, w in keep.items()})


def expand(x: np.ndarray, domains: Sequence[str], frozen: Frozen) -> np.ndarray:
    """Collapsed weights (virtual first) to leaf weights over ``domains`` (olmix's expand_collapsed_weights)."""
    x = np.atleast_2d(np.asarray(x, float))
    names = frozen.collapsed(domains)
    out = np.zeros((len(x), len(domains)))
    for j, d in enumerate(domains):
        out[:, j] = x[:, 0] * frozen.ratios[d] if d in frozen.ratios else x[:, names.index(d)]
    return out


def collapse(X: np.ndarray, domains: Sequence[str], frozen: Frozen) -> np.ndarray:
    """Leaf weights to collapsed weights; every row must keep the frozen ratios (a reuse swarm does)."""
    X = np.atleast_2d(np.asarray(X, float))
    idx = [list(domains).index(d) for d in frozen.ratios]
    share = X[:, idx].sum(axis=1)
    r = np.array(list(frozen.ratios.values()))
    dev = np.abs(X[:, idx] - share[:, None] * r[None, :]).max(axis=1)
    bad = np.flatnonzero(dev > RATIO_TOL)
    if len(bad):
        ratios = ", ".join(f"{d} {v:.4g}" for d, v in frozen.ratios.items())
        raise UserError("--freeze", f"row {bad[0]}", f"does not keep the frozen ratios ({ratios}; off by {dev[bad[0]]:.3g}): "
                        "fit a reuse swarm (assay-mix swarm --freeze), or drop --freeze")
    rest = [list(domains).index(d) for d in domains if d not in frozen.ratios]
    return np.column_stack([share, X[:, rest]])


def collapse_vector(v: Optional[np.ndarray], domains: Sequence[str], frozen: Frozen, how: str) -> Optional[np.ndarray]:
    """A prior (``how='sum'``: the virtual domain's share is the sum of its leaves') or caps (``how='cap'``:
    the virtual share may rise until its first leaf reaches its cap, min_i cap_i / ratio_i)."""
    if v is None:
        return None
    v = np.asarray(v, float)
    pos = {d: i for i, d in enumerate(domains)}
    if how == "sum":
        head = sum(v[pos[d]] for d in frozen.ratios)
    else:
        head = min(1.0, min(v[pos[d]] / r for d, r in frozen.ratios.items()))
    return np.array([head] + [v[pos[d]] for d in domains if d not in frozen.ratios])


def flatten_levels(top: Mapping[str, float], within: Mapping[str, Mapping[str, float]], sep: str = ":") -> dict[str, float]:
    """A hierarchical mixture (source → topic, or source → quality bucket) as leaf weights: w(s:t) = w(s) · w(t | s).

    ``within[s]`` gives the relative weights of s's children (normalised here); a source without children is
    a leaf itself. olmix names leaves ``source:topic`` (and ``source:topic:quality`` one level further)."""
    total = sum(float(w) for w in top.values())
    check(total > 0, "mixture", dict(top), "the source weights sum to 0")
    unknown = sorted(set(within) - set(top))
    check(not unknown, "mixture", ",".join(unknown), f"has children but is not a source; sources are {sorted(top)}")
    out: dict[str, float] = {}
    for s, w in top.items():
        kids = within.get(s)
        if not kids:
            out[s] = float(w) / total
            continue
        z = sum(float(v) for v in kids.values())
        check(z > 0 and all(float(v) >= 0 for v in kids.values()), "mixture", f"{s}: {dict(kids)}", "child weights must be >= 0 and not all 0")
        for t, v in kids.items():
            out[f"{s}{sep}{t}"] = float(w) / total * float(v) / z
    return out


class OlmixReuse:
    """Freeze the unchanged domains' ratios as one virtual domain; search only the changed part (``assay-mix swarm/propose --freeze``)."""

    ratio_tol = RATIO_TOL
    """How far a reused run's frozen leaves may leave their ratios (weights are written to 6 decimals)."""

    card = MethodCard(
        paper="Olmix (AllenAI): mixture reuse across domain updates (the repository's Section 5.1 case study; paper title and arXiv id not checked)",
        arxiv=None,
        code="allenai/olmix @ 9586977981e01b60c8b20330f623047f0b693fe3: olmix/generate/synthesize_mixture.py (topics with a fixed weight keep "
             "their ratio, the source share is sampled), olmix/fit/utils.py:expand_collapsed_weights, configs/mixture_reuse_case_study/",
        defaults={"ratio_tol": "1e-4: a table row whose frozen leaves leave their ratios by more is refused (olmix has no such check): ours"},
        notes="Frozen: every domain of the earlier proposal that still exists and is not listed as revised (olmix pins the topics of "
              "its 'existing' source). A removed domain needs no runs: its weight is dropped, the rest renormalised (olmix: "
              "'removing a domain does not require recomputation').",
        deviations=(
            "One virtual domain holds every frozen domain; olmix can pin several sources' topic ratios at once.",
            "The virtual domain's cap is min_i cap_i / ratio_i (no frozen leaf exceeds its own repetition cap); olmix bounds leaves "
            "during generation (the virtual cap is our own derivation, not read in olmix).",
            "A table row that breaks the frozen ratios is refused (one line) instead of being collapsed anyway.",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_reuse.py: a synthetic law whose optimum keeps the frozen ratios is recovered "
                "(hand-derived leaf weights) from 6 reuse runs; assay-mix propose --freeze end to end on a table; flatten_levels by hand",
    )


REUSE: dict[str, type] = {"olmix": OlmixReuse}
"""Reuse procedures by name (one: olmix's), each with its card."""
