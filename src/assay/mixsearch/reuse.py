"""Mixture reuse (olmix, AllenAI): when domains are added, removed or revised, keep the earlier proposal's
relative ratios among the unchanged domains frozen, search only over the changed part, and expand back.

olmix (``configs/mixture_reuse_case_study``, ``olmix/generate/synthesize_mixture.py``,
``olmix/fit/utils.py:expand_collapsed_weights``): the unchanged domains become one *virtual* domain whose
inner ratios are pinned (a source whose topics carry ``weight:``); the swarm samples that virtual domain's
total share together with the free domains; the fit and the proposer see the collapsed domains; the
proposal is expanded leaf by leaf as ``w_leaf = ratio_leaf · w_virtual``. A removed domain needs no new
runs (its weight is dropped and the rest renormalised).

The same collapse/expand gives olmix's levels (source → topic → quality bucket, leaves named
``source:topic:quality``; :mod:`assay.mixsearch.levels`): ``--level source|topic`` makes every node at that
depth one virtual domain whose leaves keep their natural shares. With ``--freeze`` and ``--level`` together
(:func:`combine`) the frozen leaves keep the earlier proposal's ratios -- whatever level it was made at, a
proposal's leaf weights already hold its inner shares -- and the remaining leaves are grouped at the
requested level: a node whose leaves are partly frozen stands for its free leaves alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

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
    origin: dict[str, str] = field(default_factory=dict)
    """Per group, the option that made it (``--freeze`` or ``--level``) when they differ; else ``flag``."""

    def collapsed(self, domains: Sequence[str]) -> list[str]:
        inside = {leaf for g in self.groups.values() for leaf in g}
        return list(self.groups) + [d for d in domains if d not in inside]

    def flag_of(self, group: str) -> str:
        return self.origin.get(group, self.flag)


class Frozen(Grouping):
    """The unchanged domains and their pinned relative ratios (summing to 1): one virtual domain."""

    def __init__(self, ratios: dict[str, float], name: str = VIRTUAL):
        super().__init__({name: dict(ratios)}, "--freeze", {name: "--freeze"})

    @property
    def ratios(self) -> dict[str, float]:
        return next(iter(self.groups.values()))


def combine(frozen: Frozen, level: Grouping) -> Grouping:
    """The frozen virtual domain first, then the level's nodes over the free leaves (``--freeze`` + ``--level``)."""
    pinned = set(frozen.ratios)
    overlap = sorted(pinned & {leaf for kids in level.groups.values() for leaf in kids})
    check(not overlap, "--level", overlap[0] if overlap else "", "is frozen and grouped at once (group only the free leaves)")
    check(VIRTUAL not in level.groups, "--level", VIRTUAL, "a node is named like the virtual frozen domain; rename it")
    return Grouping({**frozen.groups, **level.groups}, "--freeze", {**frozen.origin, **{g: "--level" for g in level.groups}})


def parse_freeze(text: str, domains: Sequence[str], natural: Optional[Sequence[float]] = None, sep: str = ":") -> Frozen:
    """``--freeze PROPOSAL.json[:changed,...]``: the earlier proposal, then the domains revised since."""
    path, changed = text, ""
    if not Path(text).is_file() and ":" in text:
        path, changed = _split_path(text)
    return frozen_from_proposal(path, domains, [c.strip() for c in changed.split(",") if c.strip()], natural, sep)


def _split_path(text: str) -> tuple[str, str]:
    """``runs/p.json:web:forum,code`` -> the file and the revised names (which may hold ':' themselves): the
    first ``.json:`` ends the path, else the last colon."""
    i = text.find(".json:")
    return (text[: i + 5], text[i + 6:]) if i >= 0 else tuple(text.rsplit(":", 1))  # type: ignore[return-value]


def frozen_from_proposal(path: str | Path, domains: Sequence[str], changed: Sequence[str] = (),
                         natural: Optional[Sequence[float]] = None, sep: str = ":") -> Frozen:
    """Freeze the ratios of an earlier proposal among the domains that still exist and did not change.

    Hierarchical names: a revised name may be a node (``web`` = every ``web:...`` leaf), and a proposal's key
    that is a node (a source-level mixture written by hand) spreads over its leaves at their natural shares
    (``natural``: the leaves' counts; olmix's expand_collapsed_weights)."""
    path = Path(path)
    check(path.is_file(), "--freeze", str(path), "is not a file (an earlier proposal's .json, from `assay-mix propose`)")
    data = json.loads(path.read_text())
    weights = data.get("weights", data) if isinstance(data, dict) else None
    check(isinstance(weights, dict) and weights, "--freeze", str(path), "has no weights (write one with `assay-mix propose`)")
    nat = dict(zip(domains, np.ones(len(domains)) if natural is None else np.asarray(natural, float)))

    def under(name: str) -> list[str]:
        return [name] if name in nat else [d for d in domains if d.startswith(name + sep)]

    unknown = [c for c in changed if not under(c)]
    check(not unknown, "--freeze", ",".join(unknown), f"unknown domain; domains are {list(domains)}")
    revised = {d for c in changed for d in under(c)}
    leaf: dict[str, float] = {}
    for k, w in weights.items():
        kids = under(str(k))
        z = sum(nat[d] for d in kids)
        for d in kids:
            leaf[d] = leaf.get(d, 0.0) + float(w) * (nat[d] / z if z > 0 else 1.0 / len(kids))
    keep = {d: w for d, w in leaf.items() if d not in revised and w > 0}
    check(len(keep) >= 1, "--freeze", str(path), f"no unchanged domain with weight > 0 is among {list(domains)}: nothing to freeze")
    free = [d for d in domains if d not in keep]
    check(len(free) >= 1, "--freeze", str(path), "every domain is frozen: name the revised domains after a colon (PROPOSAL.json:code,math)")
    check(VIRTUAL not in domains, "--freeze", VIRTUAL, "a domain is named like the virtual frozen domain; rename it")
    total = sum(keep.values())
    return Frozen({d: keep[d] / total for d in domains if d in keep})


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
            flag = grouping.flag_of(g)
            raise UserError(flag, f"row {bad[0]}", f"does not keep the ratios of {g} ({ratios}; off by {dev[bad[0]]:.3g}): "
                            f"fit a swarm made with the same {flag}, or drop {flag}")
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


class OlmixReuse:
    """Freeze the unchanged domains' ratios as one virtual domain and search only the changed part (``assay-mix swarm/propose
    --freeze``); or search node weights with the leaves below at their natural shares (``--level source|topic``)."""

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
            "Levels (--level source|topic, leaves named source:topic:quality): a node's leaves stay at their natural shares, "
            "olmix's collapsed source (expand_collapsed_weights: prior[t] / prior[source] · w[source]); --quality-weights splits each "
            "topic's natural share over its buckets by fixed weights, olmix's QualityConfig.weight (a bucket without one gets 0), one "
            "scheme for every topic (olmix sets it per topic). olmix's leaf-level swarm draws a Dirichlet over sources and another "
            "over each source's leaves; assay's leaf-level swarm draws one Dirichlet over all leaves (the two-stage draw is not "
            "implemented).",
            "--freeze with --level: the frozen leaves keep the earlier proposal's ratios, the free leaves are grouped at the level "
            "(a node partly frozen stands for its free leaves alone): our own reading of olmix's case study, which pins whole "
            "sources.",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_reuse.py: a synthetic law whose optimum keeps the frozen ratios is recovered "
                "(hand-derived leaf weights) from 6 reuse runs; assay-mix swarm/propose --freeze and --level source end to end (toy "
                "table, pool sizes faked); test_mixsearch_levels.py: a three-level mixture grouped at each level and flattened (shares "
                "by hand), --freeze with --level on a synthetic law whose optimum is known, caps through the levels",
    )


REUSE: dict[str, type] = {"olmix": OlmixReuse}
"""Reuse procedures by name (one: olmix's), each with its card."""
