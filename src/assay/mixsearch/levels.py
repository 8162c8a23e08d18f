"""olmix's hierarchical mixtures: source → topic → quality bucket, leaves named ``source:topic:quality``.

olmix (``olmix/aliases.py``: ``SourceConfig`` → ``TopicConfig`` → ``QualityConfig``; leaf names built in
``olmix/launch/utils.py``) nests a source's topics and a topic's quality buckets (``high``/``med``/``low``, or
vigintiles of a quality classifier) and names every leaf by its path. A source may mix topics with and
without buckets, and a source without topics is a leaf itself, so names of different lengths coexist.

Searching at a level (``--level source|topic|leaf``) makes every node at that depth one virtual domain
whose leaves keep fixed shares (:class:`~assay.mixsearch.reuse.Grouping`); leaves with no more parts than
the level are searched as they are. The fixed shares, as olmix defines them:

* natural by default: a leaf's share of its node is its count over the node's count (olmix's collapsed
  source, ``expand_collapsed_weights``: ``prior[t] / prior[source] · w[source]``; a pinned topic's quality
  buckets "proportionally ... by token count", ``generate/synthesize_mixture.py``);
* quality upsampling (``--quality-weights '{high:70,med:30}'``): olmix's ``QualityConfig.weight`` -- when
  any bucket of a topic carries a weight, the topic's share is split over its buckets by those weights,
  normalised within the topic, and a bucket without one gets 0 (``configs/examples/launch/quality_upsampling``:
  "70 + 30 = 100 → top10pct gets 70%"). Topics and sources keep their natural shares; only the split
  inside each topic changes. One set of bucket weights applies to every topic (olmix's upsampling
  configs give every topic the same scheme; a per-topic scheme is not offered here).

A mixture written per level flattens to leaf weights with :func:`flatten_levels`.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from assay.errors import check
from assay.mixsearch.reuse import Grouping

LEVELS: dict[str, Optional[int]] = {"source": 1, "topic": 2, "leaf": None}
"""``--level`` → the depth (parts of a name) of the nodes searched; leaf = every domain as it is."""

QUALITY_DEPTH = 3
"""Quality buckets are the third part of a name (``source:topic:quality``), olmix's deepest level."""


def parse_names(domains: Sequence[str], sep: str = ":", flag: str = "--level") -> dict[str, tuple[str, ...]]:
    """Each domain's path; one line for an empty part (``web::high``, ``web:news:``) or a leaf that is also a
    node of another leaf (``web:news`` beside ``web:news:high``: olmix's topic has paths or buckets, not both)."""
    paths = {d: tuple(d.split(sep)) for d in domains}
    for d, parts in paths.items():
        check(all(p.strip() for p in parts), flag, d, f"has an empty level (source{sep}topic{sep}quality parts must be non-empty)")
    nodes = {sep.join(parts[:k]): d for d, parts in paths.items() for k in range(1, len(parts))}
    both = [d for d in domains if d in nodes]
    check(not both, flag, both[0] if both else "", f"is a domain and also a node of {nodes.get(both[0]) if both else ''}: "
          "name every leaf at its full depth (the node's own data as a bucket of its own)")
    return paths


def parse_quality_weights(text: Optional[str]) -> Optional[dict[str, float]]:
    """``--quality-weights '{high:70,med:30}'`` (olmix's QualityConfig.weight): bucket name → weight >= 0."""
    if not text:
        return None
    from assay.mixsearch.mixture import parse_mixture

    weights = parse_mixture(text, "--quality-weights")
    for b, w in weights.items():
        check(np.isfinite(w) and w >= 0, f"--quality-weights.{b}", w, "a bucket weight is finite and >= 0")
    check(sum(weights.values()) > 0, "--quality-weights", text, "at least one bucket weight must be > 0")
    return weights


def by_level(domains: Sequence[str], natural: np.ndarray, level: str, quality: Optional[Mapping[str, float]] = None,
             free: Optional[Sequence[str]] = None, sep: str = ":") -> Grouping:
    """One virtual domain per node at ``level``'s depth, its leaves at their natural shares (``natural``: the
    leaves' counts or shares), the buckets of each topic split by ``quality`` if given (module docstring).

    ``free``: only these leaves are grouped (``--freeze`` pins the others); a node whose leaves are partly
    frozen then stands for its free leaves alone."""
    check(level in LEVELS, "--level", level, f"choose from {list(LEVELS)}")
    depth = LEVELS[level]
    check(depth is not None, "--level", level, "the leaf level searches every domain as it is: nothing to group")
    paths = parse_names(domains, sep)
    nat = dict(zip(domains, np.asarray(natural, float)))
    leaves = [d for d in (domains if free is None else free) if len(paths[d]) > depth]
    check(bool(leaves), "--level", level, f"no {'free ' if free is not None else ''}domain is named below the {level} level "
          f"(source{sep}topic{sep}quality has {QUALITY_DEPTH} levels): {list(free if free is not None else domains)[:8]}")
    check(quality is None or depth < QUALITY_DEPTH, "--quality-weights", dict(quality or {}), "needs --level topic or source "
          "(it fixes the bucket shares inside a topic; at the leaf level every bucket is searched)")

    def count(prefix: tuple[str, ...]) -> float:  # a node's natural count: the sum over the grouped leaves below it
        return sum(nat[d] for d in leaves if paths[d][: len(prefix)] == prefix)

    weight = {d: float(nat[d]) for d in leaves}
    if quality is not None:
        weight = _upsampled(leaves, paths, quality, count, sep)
    groups: dict[str, dict[str, float]] = {}
    for d in leaves:
        groups.setdefault(sep.join(paths[d][:depth]), {})[d] = weight[d]
    for g, kids in groups.items():
        z = sum(kids.values())
        check(z > 0, "--level", g, "has no data (its leaves' natural counts are 0): drop its domains")
        groups[g] = {d: float(v / z) for d, v in kids.items()}
    return Grouping(groups, origin={g: "--level" for g in groups})


def _upsampled(leaves, paths, quality, count, sep) -> dict[str, float]:
    """olmix's quality upsampling: a topic keeps its natural count, split over its buckets by the bucket
    weights (normalised within the topic); leaves below a bucket keep natural shares inside it."""
    buckets = {paths[d][QUALITY_DEPTH - 1] for d in leaves if len(paths[d]) >= QUALITY_DEPTH}
    unknown = sorted(set(quality) - buckets)
    check(not unknown, "--quality-weights", ",".join(unknown), f"unknown quality bucket; buckets are {sorted(buckets)}")
    out = {}
    for d in leaves:
        p = paths[d]
        if len(p) < QUALITY_DEPTH:  # a topic without buckets (or a source without topics): natural
            out[d] = count(p)
            continue
        topic, bucket = p[: QUALITY_DEPTH - 1], p[: QUALITY_DEPTH]
        kids = {paths[e][QUALITY_DEPTH - 1] for e in leaves if paths[e][: QUALITY_DEPTH - 1] == topic and len(paths[e]) >= QUALITY_DEPTH}
        z = sum(float(quality.get(b, 0.0)) for b in kids)
        check(z > 0, "--quality-weights", dict(quality), f"gives every bucket of {sep.join(topic)} ({', '.join(sorted(kids))}) weight 0")
        q = float(quality.get(p[QUALITY_DEPTH - 1], 0.0))
        check(q == 0 or count(bucket) > 0, "--quality-weights", f"{p[QUALITY_DEPTH - 1]}:{q:g}",
              f"bucket {sep.join(bucket)} is empty (0 examples) and cannot be upsampled")
        out[d] = count(topic) * q / z * (count(p) / count(bucket) if q > 0 else 0.0)
    return out


def by_source(domains: Sequence[str], natural: np.ndarray, sep: str = ":") -> Grouping:
    """The source level (olmix's collapsed sources): :func:`by_level` at ``source``."""
    return by_level(domains, natural, "source", sep=sep)


def flatten_levels(top: Mapping[str, float], within: Mapping[str, Mapping[str, float]], sep: str = ":") -> dict[str, float]:
    """A hierarchical mixture as leaf weights, at any depth: w(s:t:q) = w(s) · w(t | s) · w(q | s:t).

    ``top`` weighs the sources; ``within[node]`` gives the relative weights of a node's children, keyed by
    the node's full path (``"web"``, ``"web:news"``), normalised here; a node without children is a leaf.
    olmix names leaves by their path (``source:topic``, ``source:topic:quality``; olmix's nested ``mix``)."""
    total = sum(float(w) for w in top.values())
    check(total > 0 and all(float(w) >= 0 for w in top.values()), "mixture", dict(top), "source weights must be >= 0 and not all 0")
    out: dict[str, float] = {}
    seen: set[str] = set()

    def walk(node: str, w: float) -> None:
        kids = within.get(node)
        if not kids:
            out[node] = w
            return
        seen.add(node)
        z = sum(float(v) for v in kids.values())
        check(z > 0 and all(float(v) >= 0 for v in kids.values()), "mixture", f"{node}: {dict(kids)}", "child weights must be >= 0 and not all 0")
        for t, v in kids.items():
            check(bool(str(t).strip()) and sep not in str(t), "mixture", f"{node}: {t!r}", f"a child is named by one non-empty part (no {sep!r})")
            walk(f"{node}{sep}{t}", w * float(v) / z)

    for s, w in top.items():
        walk(s, float(w) / total)
    unknown = sorted(set(within) - seen)
    check(not unknown, "mixture", ",".join(unknown), f"has children but is not a source or a node below one; sources are {sorted(top)}")
    return out


def at_level(weights: Mapping[str, float], level: str, sep: str = ":") -> dict[str, float]:
    """Leaf weights summed to the nodes of ``level`` (names with fewer parts stay as they are)."""
    check(level in LEVELS, "--level", level, f"choose from {list(LEVELS)}")
    depth = LEVELS[level]
    parse_names(list(weights), sep)
    out: dict[str, float] = {}
    for d, w in weights.items():
        key = d if depth is None else sep.join(d.split(sep)[:depth])
        out[key] = out.get(key, 0.0) + float(w)
    return out
