"""Mixture reuse (olmix, AllenAI): when domains are added, removed or revised, keep the earlier proposal's
relative ratios among the unchanged domains frozen, search only over the changed part, and expand back.

olmix (``configs/mixture_reuse_case_study``, ``olmix/generate/synthesize_mixture.py``,
``olmix/fit/utils.py:expand_collapsed_weights``): the unchanged domains become one *virtual* domain whose
inner ratios are pinned (a source whose topics carry ``weight:``); the swarm samples that virtual domain's
total share together with the free domains; the fit and the proposer see the collapsed domains; the
proposal is expanded leaf by leaf as ``w_leaf = ratio_leaf · w_virtual``. A removed domain needs no new
runs (its weight is dropped and the rest renormalised).

The same collapse/expand gives olmix's two levels (source → topic, leaves named ``source:topic``):
``--level source`` makes every source one virtual domain whose topics keep their prior (natural) shares,
so the swarm, the fit and the proposer work with source weights (:func:`by_source`); a mixture written
per level flattens to leaf weights with :func:`flatten_levels`.
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
class Grouping:
    """Virtual domains, each standing for a group of leaves with pinned relative ratios (each group's sum 1).

    The searched (collapsed) domains are the groups first, then every leaf in no group; a leaf's weight is
    its ratio × its group's weight (olmix's expand_collapsed_weights)."""

    groups: dict[str, dict[str, float]]
    flag: str = "--level"
    """The option that asked for it (named in error lines)."""

    def collapsed(self, domains: Sequence[str]) -> list[str]:
        inside = {leaf for g in self.groups.values() for leaf in g}
        return list(self.groups) + [d for d in domains if d not in inside]


class Frozen(Grouping):
    """The unchanged domains and their pinned relative ratios (summing to 1): one virtual domain."""

    def __init__(self, ratios: dict[str, float], name: str = VIRTUAL):
        super().__init__({name: dict(ratios)}, "--freeze")

    @property
    def ratios(self) -> dict[str, float]:
        return next(iter(self.groups.values()))


def by_source(domains: Sequence[str], prior: np.ndarray, sep: str = ":") -> Grouping:
    """The source level of leaves named ``source:topic`` (olmix's naming): each source one virtual domain whose
    topics keep their prior's within-source shares (olmix expands a collapsed source by prior[t] / prior[source])."""
    groups: dict[str, dict[str, float]] = {}
    for d, p in zip(domains, np.asarray(prior, float)):
        if sep in d:
            groups.setdefault(d.split(sep, 1)[0], {})[d] = float(p)
    check(bool(groups), "--level", "source", f"no domain is named source{sep}topic: {list(domains)[:8]}")
    clash = sorted(set(groups) & set(domains))
    check(not clash, "--level", "source", f"source {clash[0] if clash else ''} is also a domain of its own; rename one")
    for g, kids in groups.items():
        z = sum(kids.values())
        groups[g] = {d: v / z for d, v in kids.items()}
    return Grouping(groups)


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


def expand(x: np.ndarray, domains: Sequence[str], grouping: Grouping) -> np.ndarray:
    """Collapsed weights (groups first) to leaf weights over ``domains`` (olmix's expand_collapsed_weights)."""
    x = np.atleast_2d(np.asarray(x, float))
    names = grouping.collapsed(domains)
    owner = {leaf: (names.index(g), r) for g, kids in grouping.groups.items() for leaf, r in kids.items()}
    out = np.zeros((len(x), len(domains)))
    for j, d in enumerate(domains):
        out[:, j] = x[:, owner[d][0]] * owner[d][1] if d in owner else x[:, names.index(d)]
    return out


def collapse(X: np.ndarray, domains: Sequence[str], grouping: Grouping) -> np.ndarray:
    """Leaf weights to collapsed weights; every row must keep every group's ratios (a swarm made so does)."""
    X = np.atleast_2d(np.asarray(X, float))
    pos = {d: i for i, d in enumerate(domains)}
    heads = []
    for g, kids in grouping.groups.items():
        idx = [pos[d] for d in kids]
        share = X[:, idx].sum(axis=1)
        dev = np.abs(X[:, idx] - share[:, None] * np.array(list(kids.values()))[None, :]).max(axis=1)
        bad = np.flatnonzero(dev > RATIO_TOL)
        if len(bad):
            ratios = ", ".join(f"{d} {v:.4g}" for d, v in kids.items())
            raise UserError(grouping.flag, f"row {bad[0]}", f"does not keep the ratios of {g} ({ratios}; off by {dev[bad[0]]:.3g}): "
                            f"fit a swarm made with the same {grouping.flag}, or drop {grouping.flag}")
        heads.append(share)
    inside = {leaf for kids in grouping.groups.values() for leaf in kids}
    rest = [pos[d] for d in domains if d not in inside]
    return np.column_stack(heads + [X[:, rest]])


def collapse_vector(v: Optional[np.ndarray], domains: Sequence[str], grouping: Grouping, how: str) -> Optional[np.ndarray]:
    """A prior (``how='sum'``: a group's share is the sum of its leaves') or caps (``how='cap'``: a group's
    share may rise until its first leaf reaches its cap, min_i cap_i / ratio_i)."""
    if v is None:
        return None
    v = np.asarray(v, float)
    pos = {d: i for i, d in enumerate(domains)}
    heads = [sum(v[pos[d]] for d in kids) if how == "sum" else min(1.0, min(v[pos[d]] / r if r > 0 else np.inf for d, r in kids.items()))
             for kids in grouping.groups.values()]
    inside = {leaf for kids in grouping.groups.values() for leaf in kids}
    return np.array(heads + [v[pos[d]] for d in domains if d not in inside])


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
    """Freeze the unchanged domains' ratios as one virtual domain and search only the changed part (``assay-mix swarm/propose
    --freeze``); or search source weights with topics at their natural shares (``--level source``)."""

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
            "Source level (--level source): every source's topics stay at their prior shares, olmix's collapsed source "
            "(expand_collapsed_weights: prior[t] / prior[source] · w[source]). olmix's leaf-level swarm draws a Dirichlet over "
            "sources and another over each source's topics; assay's leaf-level swarm draws one Dirichlet over all leaves "
            "(the two-stage draw is not implemented). Only two levels (source → topic); olmix's third (quality) is not.",
            "--level source and --freeze are not combined (olmix can freeze some sources' topics while searching others').",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_reuse.py: a synthetic law whose optimum keeps the frozen ratios is recovered "
                "(hand-derived leaf weights) from 6 reuse runs; assay-mix swarm/propose --freeze and --level source end to end (toy "
                "table, pool sizes faked); by_source and flatten_levels by hand",
    )


REUSE: dict[str, type] = {"olmix": OlmixReuse}
"""Reuse procedures by name (one: olmix's), each with its card."""
