"""Clusters of embeddings: seeded k-means, as the ``kmeans_diverse`` scorer and the ``quota``
selector's ``by=cluster`` groups use it."""

from __future__ import annotations

import numpy as np


def kmeans(x: np.ndarray, clusters: int, seed: int):
    """Seeded k-means (at most one cluster per point), as kmeans_diverse and per-cluster quotas use it."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=min(clusters, len(x)), random_state=seed, n_init=4).fit(x)
