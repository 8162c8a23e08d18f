"""Merging LoRA adapters trained by several clients: TIES (Yadav et al., NeurIPS 2023, arXiv 2306.01708)
on task vectors, and the projection of a merged weight delta back to a rank-r adapter. The
``merge_linear``, ``ties`` and ``ties_factors`` rules (:mod:`assay.collab.rules`) combine with these."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from assay.errors import check

FIELD = "collab.aggregation"
"""Where a collaborative rule's options live in the config (``collab/aggregation=<rule>``)."""


def trim(task_vector: np.ndarray, density: float) -> np.ndarray:
    """Keep the ``density`` share of the entries with the largest magnitude (int(density x n), at
    least one; ties broken by position), zero the rest."""
    flat = np.asarray(task_vector, dtype=np.float64).reshape(-1)
    if density >= 1.0:
        return flat.reshape(np.shape(task_vector)).copy()
    k = max(1, int(density * flat.size))
    keep = np.argsort(-np.abs(flat), kind="stable")[:k]
    out = np.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(np.shape(task_vector))


def elect_signs(trimmed: np.ndarray) -> np.ndarray:
    """Per entry, the sign of the sum of the clients' trimmed values (stacked on axis 0); a zero sum
    takes the majority of the elected signs (+ on a tie)."""
    sign = np.sign(trimmed.sum(axis=0))
    majority = 1.0 if sign.sum() >= 0 else -1.0
    return np.where(sign == 0, majority, sign)


def ties_merge(task_vectors: Sequence[np.ndarray], density: float, weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """TIES-Merging (Yadav et al. 2023) of same-shaped task vectors: trim each to ``density``, elect
    a sign per entry, and average the trimmed values that agree with it (weighted by ``weights``;
    equal weights = the paper's disjoint mean). An entry no client keeps with the elected sign is 0."""
    trimmed = np.stack([trim(t, density) for t in task_vectors])
    sign = elect_signs(trimmed)
    agree = (np.sign(trimmed) == sign) & (trimmed != 0)
    w = np.ones(len(trimmed)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w.reshape((-1,) + (1,) * (trimmed.ndim - 1))
    total = (w * agree).sum(axis=0)
    return np.where(total > 0, (w * trimmed * agree).sum(axis=0) / np.where(total > 0, total, 1.0), 0.0)


def project_lora(delta: np.ndarray, rank: int, scaling: float) -> tuple[np.ndarray, np.ndarray]:
    """B (out x rank), A (rank x in) with ``scaling x B A`` the best rank-``rank`` approximation of
    ``delta`` (truncated SVD, singular values split evenly between the factors; zero rows / columns
    beyond delta's own rank)."""
    u, s, vt = np.linalg.svd(np.asarray(delta, dtype=np.float64), full_matrices=False)
    k = min(rank, len(s))
    root = np.sqrt(s[:k] / scaling)
    b = np.zeros((delta.shape[0], rank))
    a = np.zeros((rank, delta.shape[1]))
    b[:, :k] = u[:, :k] * root
    a[:k] = root[:, None] * vt[:k]
    return b, a


def lora_layers(model) -> list[tuple[str, str, float]]:
    """(A parameter name, B parameter name, scaling lora_alpha / r) of every LoRA layer of ``model``'s
    active adapter, with the names ``named_parameters`` gives."""
    import torch

    active = model.active_adapter
    out = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and active in lora_a:
            out.append((f"{name}.lora_A.{active}.weight", f"{name}.lora_B.{active}.weight", float(module.scaling[active])))
    return out


def merge_task_vectors(layers: Sequence[tuple[str, str, float]], initial: Mapping[str, np.ndarray], states: Sequence[Mapping[str, np.ndarray]],
                       density: float, weights: Optional[Sequence[float]] = None) -> dict[str, np.ndarray]:
    """TIES on task vectors over a trainable state: each LoRA layer's clients' updates
    s (B_c A_c - B_0 A_0) merged and projected back to rank r (the initial update added back first),
    every other parameter's theta_c - theta_0 merged and added to theta_0."""
    check(len(layers) > 0, FIELD, "ties", "merges LoRA adapters, and the model has none: set model.lora.r > 0")
    out: dict[str, np.ndarray] = {}
    for a_key, b_key, s in layers:
        a0, b0 = (np.asarray(initial[k], dtype=np.float64) for k in (a_key, b_key))
        base = s * b0 @ a0
        deltas = [s * np.asarray(st[b_key], dtype=np.float64) @ np.asarray(st[a_key], dtype=np.float64) - base for st in states]
        b, a = project_lora(base + ties_merge(deltas, density, weights), a0.shape[0], s)
        out[a_key], out[b_key] = a.astype(initial[a_key].dtype), b.astype(initial[b_key].dtype)
    for key, theta0 in initial.items():
        if key not in out:
            merged = ties_merge([np.asarray(st[key], dtype=np.float64) - theta0 for st in states], density, weights)
            out[key] = (theta0 + merged).astype(theta0.dtype)
    return out
