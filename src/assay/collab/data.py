"""Clients' data: one pool partitioned by a column, per-client corruption, the public splits.

In a simulation every client derives its own partition from the same seeded pool (the generator or
the files are the same on every node); in a deployment each node's ``data.*`` points at its own
local files and the partition column picks its rows. Either way a client's rows never leave it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import datasets
import numpy as np

from assay.config import CollabConfig
from assay.errors import UserError, check

CLIENT_NOISE_STREAM = 7_919
"""Added to the run seed per client, so clients' corruption masks are independent draws."""


@dataclass
class Clients:
    names: list[str]
    """The partition value of each client, in client order."""
    column: str


def plan_clients(train: datasets.Dataset, collab: CollabConfig) -> Clients:
    """Which partition value each client holds, with every bad-input case named."""
    column = collab.partition_by
    check(column in train.column_names, "collab.partition_by", column, f"is not a column of the training data; columns are {sorted(train.column_names)}")
    values = [str(v) for v in train[column]]
    present = sorted(set(values))
    names = [str(c) for c in collab.clients] or present
    if collab.num_clients is not None:
        check(collab.num_clients <= len(names), "collab.num_clients", collab.num_clients,
              f"more clients than partitions: {column} has {len(names)} ({names})")
        names = names[: collab.num_clients]
    counts = {v: values.count(v) for v in present}
    for i, name in enumerate(names):
        if counts.get(name, 0) == 0:
            raise UserError(f"collab.clients[{i}]", name, f"client {i} has no training examples after partitioning by {column}; values present: {present}")
    if collab.corruption:
        check(len(collab.corruption) == len(names), "collab.corruption", list(collab.corruption), f"needs one rate per client ({len(names)} clients: {names})")
    return Clients(names, column)


def client_partition(train: datasets.Dataset, clients: Clients, index: int, collab: CollabConfig, data_format: str, seed: int) -> datasets.Dataset:
    """Client ``index``'s rows, corrupted at its own rate (``is_corrupted`` keeps the ground truth)."""
    wanted = clients.names[index]
    part = train.filter(lambda v: str(v) == wanted, input_columns=clients.column)
    rate = collab.corruption[index] if collab.corruption else 0.0
    return corrupt(part, rate, list(collab.corruption_kinds), seed + CLIENT_NOISE_STREAM * (index + 1), data_format)


def corrupt(part: datasets.Dataset, rate: float, kinds: list[str], seed: int, data_format: str) -> datasets.Dataset:
    """``noise=corrupt`` at ``rate``. Its schema caps p below 0.5 (above that a *flip* inverts the
    labels); a corrupted completion is a different thing, and CLUES's silos go to 60 % and beyond."""
    from assay.data.noise import Corrupt

    noise = Corrupt(p=0.0, kinds=kinds, seed=seed)
    noise.p = rate
    return noise.apply(part, data_format)


def check_anchor(anchor: datasets.Dataset, train: datasets.Dataset, split: str) -> None:
    """The trusted anchor set must share no example with any client's data."""
    check(len(anchor) > 0, "selection.selector.split", split, "the anchor set is empty; the global threshold needs trusted examples")
    shared = set(anchor["id"]) & set(train["id"])
    if not shared:
        texts = set(zip(anchor["prompt"], anchor["completion" if "completion" in anchor.column_names else "chosen"]))
        mine = set(zip(train["prompt"], train["completion" if "completion" in train.column_names else "chosen"]))
        shared = {f"{p!r}" for p, _ in texts & mine}
    check(not shared, "selection.selector.split", split, f"overlaps client data in {len(shared)} examples (e.g. {sorted(shared)[:2]}); the anchor set must be disjoint from every client")


def quality_report(train: datasets.Dataset, scores: np.ndarray, kept: np.ndarray) -> dict:
    """CLUES's Table 3 view of a selection as a detector of good data: positives are the clean
    examples (no ground-truth flag), the prediction is "kept". Precision = clean share of the kept,
    recall = kept share of the clean, F1, accuracy = (clean kept + noisy dropped) / all. Plus the
    project's detection report (AUROC, precision@k of the lowest scores for the noisy ones)."""
    from assay.selection.detection import FLAGS, detection_report

    out = {"detection": detection_report(train, scores, kept), "pool": len(kept), "kept": int(kept.sum())}
    for flag in FLAGS:
        if flag not in train.column_names:
            continue
        clean = ~np.asarray(train[flag], dtype=bool)
        tp = int((kept & clean).sum())
        precision = tp / max(int(kept.sum()), 1)
        recall = tp / max(int(clean.sum()), 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        accuracy = float((kept == clean).mean())
        out[flag] = {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy, "noisy": int((~clean).sum())}
    return out


def oracle_scores(part: datasets.Dataset) -> Optional[np.ndarray]:
    """1 for the clean examples, 0 for flagged ones (None when the data carries no flag)."""
    from assay.data.noise import FLAGS

    for flag in FLAGS:
        if flag in part.column_names:
            return 1.0 - np.asarray(part[flag], dtype=np.float64)
    return None
