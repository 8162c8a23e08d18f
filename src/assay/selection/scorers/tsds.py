"""TSDS (Liu, Karbasi & Rekatsinas, NeurIPS 2024, arXiv 2410.11303): a sampling distribution over the
pool that matches the target set in optimal transport while a kernel-density regulariser keeps it
diverse (near-duplicates share one candidate's mass). The numerics are ``assay.ot.knn_transport``.

DataFlex (OpenDCAI/DataFlex ``offline_tsds_selector.py`` writes the probabilities, ``tsds_selector.py``
samples the budget from them without replacement, ``np.random.choice(replace=False, p=probs)``). As a
score, ``sample=true`` gives log p_i + G_i with G_i standard Gumbel noise from the run's seed: the
top-k of that is a draw of k without replacement in proportion to p (the Gumbel-top-k trick; Vieira
2014, Kool, van Hoof & Welling 2019, arXiv 1903.06059), so ``selector=top`` samples as DataFlex does;
``sample=false`` keeps the highest probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.errors import check
from assay.ot.knn_transport import tsds_probabilities
from assay.registry import register
from assay.selection.base import SelectionContext
from assay.selection.scorers.near import TargetEmbeddings, unit_rows


SAMPLING_STREAM = 2_000_003
"""Second seed word of the Gumbel noise: a stream of its own, not the noise transforms' default_rng(seed)
over the same rows (which would tie the draw to the noisy rows)."""


def gumbel_top_k_scores(probs: np.ndarray, seed: int) -> np.ndarray:
    """log p + Gumbel(0, 1) noise (seeded); −inf where p = 0 (never drawn before every p > 0 is)."""
    gumbel = -np.log(-np.log(np.random.default_rng([seed, SAMPLING_STREAM]).uniform(np.finfo(float).tiny, 1.0, size=len(probs))))
    with np.errstate(divide="ignore"):
        return np.where(probs > 0, np.log(probs) + gumbel, -np.inf)


@register("selection", "tsds")
@dataclass
class Tsds(TargetEmbeddings):
    """TSDS (Liu et al. 2024): OT distribution matching toward the target with a KDE diversity term, as DataFlex runs it."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Liu, Karbasi & Rekatsinas 2024, TSDS: Data Selection for Task-Specific Model Finetuning (NeurIPS 2024)",
        arxiv="2410.11303",
        code="OpenDCAI/DataFlex: src/dataflex/offline_selector/offline_tsds_selector.py (the KNN-KDE sweep) and "
             "src/dataflex/train/selector/tsds_selector.py (sampling), read for this implementation; the authors' repository "
             "was not read",
        defaults={
            "neighbours": "5000 (DataFlex max_K): follows",
            "kde_neighbours": "1000 (DataFlex kde_K): follows",
            "sigma": "0.75 (DataFlex): follows",
            "alpha": "0.6 (DataFlex): follows",
            "c": "5.0 (DataFlex C): follows",
            "sample": "true (DataFlex samples without replacement from the probabilities): follows",
            "embedder": "minilm (DataFlex: Qwen/Qwen3-Embedding-0.6B): differs: a small offline encoder; any embedder applies",
            "target_split": "val (DataFlex: a query file, else the first 100 candidates): differs: the run's trusted split",
        },
        deviations=(
            "Exact Euclidean neighbours on unit-normalised embeddings, for the query lists and the density estimate, instead of "
            "FAISS IVFFlat (nlist = √N/2, nprobe = 10); no faiss dependency.",
            "Sampling is the Gumbel-top-k of log p with the run's seed (the same distribution as numpy's draw without "
            "replacement, not the same draw); examples of probability 0 follow every other one (numpy refuses a budget "
            "larger than the support).",
            "Keeps half by default (selector=top); the paper selects 1%-5% of the pool.",
        ),
        checked="tests/unit/selection/test_tsds.py: the sweep's probabilities by hand on points on a line (stopping at each "
                "level, and the KDE halving near-duplicates' mass), Gumbel-top-k sampling frequencies against p, the target's cluster "
                "kept on constructed embeddings",
        notes="Pure numerics in assay.ot.knn_transport. The greedy sweep runs in Python over the neighbour lists (M·K heap "
              "steps at most): seconds for thousands of target examples with K in the hundreds.",
    )

    name: str = "tsds"
    neighbours: int = 5000
    """K: nearest pool examples listed per target example (max_K); at least 2. Capped at the pool size."""
    kde_neighbours: int = 1000
    """Neighbours in each candidate's kernel density estimate (kde_K), among the candidates the lists reach."""
    sigma: float = 0.75
    """Kernel bandwidth σ of max(0, 1 − d²/σ²) on unit vectors (d² = 2 − 2·cos); 0 = no density estimate."""
    alpha: float = 0.6
    """α in (0, 1): weight of the transport term against the diversity term; larger = closer to the target's neighbours."""
    c: float = 5.0
    """C (> 0): the scale of the transport cost in the stopping rule (α/C)·Σ cost ≥ (1 − α)·M."""
    sample: bool = True
    """Draw the budget without replacement in proportion to the probabilities (seeded), as DataFlex does;
    false keeps the most probable examples."""

    def __post_init__(self) -> None:
        check(isinstance(self.neighbours, int) and self.neighbours >= 2, "selection.neighbours", self.neighbours, "must be an integer >= 2")
        check(isinstance(self.kde_neighbours, int) and self.kde_neighbours >= 1, "selection.kde_neighbours", self.kde_neighbours, "must be a positive integer")
        check(self.sigma >= 0, "selection.sigma", self.sigma, "must be >= 0 (0 = no density estimate)")
        check(0 < self.alpha < 1, "selection.alpha", self.alpha, "must be in (0, 1)")
        check(self.c > 0, "selection.c", self.c, "must be > 0")
        super().__post_init__()

    def probabilities(self, ctx: SelectionContext) -> np.ndarray:
        x, y = self.embed_pair(ctx)
        check(len(x) >= 2, "selection", self.name, f"needs at least 2 training examples, got {len(x)}")
        return tsds_probabilities(unit_rows(x), unit_rows(y), self.neighbours, self.kde_neighbours, self.sigma, self.alpha, self.c)

    def score(self, ctx: SelectionContext) -> np.ndarray:
        probs = self.probabilities(ctx)
        return gumbel_top_k_scores(probs, self.seed) if self.sample else probs
