"""Cluster-LESS: LESS scored per cluster of the pool, as DataFlex defines it (OpenDCAI/DataFlex
``src/dataflex/train/selector/cluster_less_selector.py``, read for this module).

LESS takes one projected gradient per training example. DataFlex's ``cluster_less`` takes gradients only
of a few representatives:

1. embed every training example once without gradients (last hidden state, mean over its tokens,
   L2-normalised) and cluster the embeddings by k-means into K = ceil(N / cluster_size) clusters;
2. draw ``samples_per_cluster`` representatives of every cluster at random (seeded);
3. the cluster's gradient is the mean of its representatives' normalised projected gradients,
   normalised again: ĝ_c = normalise(mean_{i ∈ reps(c)} normalise(g_i));
4. the cluster's score is the mean cosine with the target gradients, s_c = (1/M) Σ_j ⟨ĝ_c, normalise(v_j)⟩,
   and every member of c gets s_c (so the top-k keeps whole clusters, best first).

The cost is K·samples_per_cluster gradients instead of N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.embeddings.clusters import kmeans
from assay.errors import check
from assay.lazy import F, torch
from assay.models.passes import padded_batches, pooled_hidden_states
from assay.registry import register
from assay.selection.base import SelectionContext, TargetSet
from assay.selection.scorers.gradient_scores import GradientScorer


def n_clusters(n: int, cluster_size: int) -> int:
    """DataFlex's K = ceil(N / cluster_size), at least 1 and at most N."""
    return max(1, min(int(math.ceil(n / max(1, cluster_size))), n))


def representatives(labels: np.ndarray, per_cluster: int, seed: int) -> np.ndarray:
    """min(per_cluster, |c|) members of every cluster c drawn without replacement, cluster by cluster."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        out.extend(rng.permutation(members)[: min(per_cluster, len(members))].tolist())
    return np.array(out, dtype=int)


def cluster_scores(labels: np.ndarray, reps: np.ndarray, rep_grads, target_grads) -> np.ndarray:
    """Every example's score: its cluster's mean cosine with the target gradients (steps 3-4 above)."""
    g = F.normalize(torch.as_tensor(rep_grads).float(), dim=1)
    v = F.normalize(torch.as_tensor(target_grads).float(), dim=1)
    k = int(labels.max()) + 1
    rep_c = torch.as_tensor(labels[reps], dtype=torch.long)
    sums = torch.zeros(k, g.shape[1]).index_add_(0, rep_c, g)
    counts = torch.zeros(k, 1).index_add_(0, rep_c, torch.ones(len(reps), 1)).clamp(min=1.0)
    per_cluster = (F.normalize(sums / counts, dim=1) @ v.T).mean(1)
    return per_cluster[torch.as_tensor(labels, dtype=torch.long)].numpy()


@register("selection", "cluster_less")
@dataclass
class ClusterLESS(GradientScorer, TargetSet):
    """Cluster-LESS (DataFlex): k-means on embeddings, LESS cosines of a few representatives' gradients per cluster, shared by the cluster."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="DataFlex's cluster-accelerated LESS (no paper of its own); LESS: Xia et al. 2024, arXiv 2402.04333",
        arxiv="2402.04333",
        code="OpenDCAI/DataFlex @ 3c13e372637ffb6f931d9ee058f7969cee15e468: src/dataflex/train/selector/cluster_less_selector.py "
             "(select, _sample_representatives, _resolve_num_clusters), src/dataflex/configs/components.yaml; read for this module",
        defaults={
            "proj_dim": "4096 (DataFlex components.yaml): follows",
            "cluster_size": "64 (DataFlex): follows",
            "samples_per_cluster": "4 (DataFlex components.yaml; its class default is 3): follows the config",
            "projection": "sjlt (DataFlex: TRAK's dense Rademacher projector): differs: same inner-product variance; "
                          "projection=rademacher follows",
        },
        deviations=(
            "k-means is scikit-learn's (k-means++ init, 4 restarts, to convergence); DataFlex runs its own Lloyd iterations "
            "(10) from K random points. Its other clusterings (spherical k-means, farthest-first, LSH, random partition) and "
            "representative strategies (nearest/farthest/mixed) are not offered: the defaults (kmeans, random) only.",
            "The embeddings are the scored model's (DataFlex's default when no separate embedding model is named), computed "
            "once per scoring, not cached across selection steps.",
            "Training gradients are plain (SGD) gradients over LoRA adapters, else the last decoder layer (DataFlex: "
            "gradient_type=adam over the LoRA parameters).",
            "Keeps half by default (selector=top); DataFlex takes a configured count.",
        ),
        checked="tests/unit/selection/test_cluster_less.py: cluster scores by hand on 2-d gradients, K and the representatives "
                "drawn, and score() end to end against per-example gradients on a tiny model",
    )

    name: str = "cluster_less"
    proj_dim: int = 4096
    cluster_size: int = 64
    """Examples per cluster on average: K = ceil(N / cluster_size) (DataFlex's cluster_size)."""
    samples_per_cluster: int = 4
    """Representatives whose gradients stand for their cluster (DataFlex's samples_per_cluster)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.cluster_size >= 1, "selection.cluster_size", self.cluster_size, "must be a positive integer")
        check(self.samples_per_cluster >= 1, "selection.samples_per_cluster", self.samples_per_cluster, "must be a positive integer")

    def clusters(self, ctx: SelectionContext) -> np.ndarray:
        """k-means labels of the mean-pooled, L2-normalised last hidden states (DataFlex's embedding)."""
        x = pooled_hidden_states(ctx.model, padded_batches(ctx.train, ctx.tokenizer.pad_token_id, self.batch_size, desc="embedding"),
                                 weighting="mean", normalize=True)
        return np.asarray(kmeans(x, n_clusters(len(x), self.cluster_size), self.seed).labels_)

    def score(self, ctx: SelectionContext) -> np.ndarray:
        labels = self.clusters(ctx)
        reps = representatives(labels, self.samples_per_cluster, self.seed)
        pad = ctx.tokenizer.pad_token_id
        g = self.features(ctx.model, ctx.train.select(reps.tolist()), pad)
        v = self.features(ctx.model, self.target(ctx), pad)
        self.cost = {"clusters": int(labels.max()) + 1, "representatives": int(len(reps))}
        return cluster_scores(labels, reps, g, v)
