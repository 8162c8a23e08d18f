"""Scorers that run the run's model over the pool (no gradients): perplexity, IFD, EL2N, embedding
similarity to a target set, and k-means diversity.

The model at selection time is the stage's starting point: a fresh model, or with
``model.init_from=<run>`` the model an earlier stage trained (the usual warm-up -> score -> select
recipe). The response scored is ``completion`` (SFT) or ``chosen`` (pairs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
from assay.lazy import F, torch

from assay.cards import MethodCard
from assay.data.collate import IGNORE
from assay.data.text import response_column
from assay.errors import check
from assay.embeddings.clusters import kmeans
from assay.models.passes import embed_examples, eval_mode, forward, padded_batches
from assay.registry import register
from assay.selection.base import ModelSource, Scorer, SelectionContext, TargetSet

PREFER = ("easy", "hard")


def token_statistics(model, ds, pad_id: int, batch_size: int, with_prompt: bool = True, bos_id: Optional[int] = None) -> dict[str, np.ndarray]:
    """Per example, over response tokens: mean NLL (``loss``) and mean ‖softmax − onehot‖₂ (``el2n``)."""
    loss, el2n = [], []
    with eval_mode(model):
        for batch in padded_batches(ds, pad_id, batch_size, with_prompt, bos_id):
            logits = forward(model, batch).logits[:, :-1].float()
            targets = batch["labels"][:, 1:].to(logits.device)
            mask = (targets != IGNORE).float()
            logp = F.log_softmax(logits, -1)
            gold = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            probs = logp.exp()
            # ‖p − e_y‖² = Σ_v p_v² − 2 p_y + 1  (Paul et al. 2021, EL2N, per token)
            err = ((probs**2).sum(-1) - 2 * gold.exp() + 1).clamp(min=0).sqrt()
            n = mask.sum(-1).clamp(min=1)
            loss.append((-(gold * mask).sum(-1) / n).cpu())
            el2n.append(((err * mask).sum(-1) / n).cpu())
    return {"loss": torch.cat(loss).numpy(), "el2n": torch.cat(el2n).numpy()}


@dataclass
class ModelScorer(ModelSource, Scorer):
    budget: ClassVar[float] = 0.5
    batch_size: int = 16
    """Examples per forward pass while scoring."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.batch_size > 0, "selection.batch_size", self.batch_size, "must be a positive integer")

    needs_model: ClassVar[bool] = True
    needs_trained_model: ClassVar[bool] = True


@dataclass
class LossScorer(ModelScorer):
    prefer: str = "easy"
    """``easy`` keeps low-loss examples (filters noise and garbage); ``hard`` keeps high-loss ones
    (Paul et al.'s pruning of easy examples)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.prefer in PREFER, "selection.prefer", self.prefer, f"must be one of {list(PREFER)}")

    def signed(self, difficulty: np.ndarray) -> np.ndarray:
        return -difficulty if self.prefer == "easy" else difficulty


@register("selection", "perplexity")
@dataclass
class Perplexity(LossScorer):
    """Reference-model loss per example (perplexity filter): mean NLL of the response given the prompt."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        defaults={"prefer": "easy (keep low-loss examples: filter noise and garbage); hard keeps high-loss ones"},
        deviations=(
            "Scored with the run's model (or dynamics_from's), not a KenLM model as data-juicer's perplexity_filter (max_ppl "
            "1500); keeps half by default with selector=top, or a fixed cut with selector=threshold.",
        ),
        checked="tests/unit/selection/test_scorers.py: matches a direct computation of the mean response NLL",
        notes="The perplexity filter baseline (no single paper): mean NLL of the response given the prompt.",
    )

    name: str = "perplexity"

    def score(self, ctx: SelectionContext) -> np.ndarray:
        stats = token_statistics(ctx.model, ctx.train, ctx.tokenizer.pad_token_id, self.batch_size)
        return self.signed(stats["loss"])


@register("selection", "el2n")
@dataclass
class EL2N(LossScorer):
    """EL2N (Paul et al. 2021, arXiv 2107.07075): ‖softmax − onehot‖₂ averaged over response tokens."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Paul, Ganguli & Dziugaite 2021, Deep Learning on a Data Diet: Finding Important Examples Early in Training (NeurIPS 2021)",
        arxiv="2107.07075",
        code=None,
        defaults={"prefer": "easy (the paper prunes the lowest scores, i.e. keeps hard): differs: on noisy pools the highest "
                            "scores flag noise; prefer=hard follows the paper"},
        deviations=(
            "Per token: ‖softmax − onehot‖₂ averaged over the response tokens; the paper scores one class label per image.",
            "One model (the stage's, or dynamics_from's final weights) at whatever point it was trained; the paper averages over several initialisations at an early epoch (details from memory in the research note).",
            "Keeps half by default (selector=top); the paper sweeps pruning fractions.",
        ),
        checked="tests/unit/selection/test_scorers.py: matches a direct computation",
        notes="No repository was read for EL2N.",
    )

    name: str = "el2n"

    def score(self, ctx: SelectionContext) -> np.ndarray:
        stats = token_statistics(ctx.model, ctx.train, ctx.tokenizer.pad_token_id, self.batch_size)
        return self.signed(stats["el2n"])


@register("selection", "ifd")
@dataclass
class IFD(ModelScorer):
    """Instruction-following difficulty (Li et al. 2024, arXiv 2308.12032): loss(A|Q) / loss(A)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Li et al. 2024, From Quantity to Quality: Boosting LLM Performance with Self-Guided Data Selection for "
              "Instruction Tuning (Cherry LLM, NAACL 2024)",
        arxiv="2308.12032",
        code="tianyi-lab/Cherry_LLM: not checked; the ratio as CLUES's IFD_PPL_score.filter_by_IFD computes it (research note)",
        defaults={"max_ifd": "1.0 (Cherry drops IFD >= 1): follows"},
        deviations=(
            "No 'pre-experienced' model trained on k-means-sampled examples: IFD is scored with the run's model or dynamics_from's "
            "(Cherry's recipe details are unverified in the research note).",
            "The answer-alone loss conditions on BOS only, not on a '### Response:' prefix as CLUES's implementation.",
            "Keeps half by default (selector=top); Cherry keeps a small top share (5-10%, from memory in the research note).",
        ),
        checked="tests/unit/selection/test_scorers.py: the loss ratio, and misaligned pairs (IFD >= 1) ranked below aligned ones",
    )

    name: str = "ifd"
    max_ifd: float = 1.0
    """IFD >= this means the instruction does not help predict the answer (misaligned pair); Cherry
    drops those and keeps the highest IFD below it. Their keep-score is pushed below every aligned
    one (``max_ifd − IFD``), so the top of the ranking is Cherry's choice."""

    def score(self, ctx: SelectionContext) -> np.ndarray:
        tok = ctx.tokenizer
        conditioned = token_statistics(ctx.model, ctx.train, tok.pad_token_id, self.batch_size)["loss"]
        alone = token_statistics(ctx.model, ctx.train, tok.pad_token_id, self.batch_size, with_prompt=False, bos_id=tok.bos_token_id)["loss"]
        ifd = conditioned / np.maximum(alone, 1e-8)
        return np.where(ifd < self.max_ifd, ifd, self.max_ifd - ifd)


@register("selection", "embed_sim")
@dataclass
class EmbedSim(ModelScorer, TargetSet):
    """RDS+ (Ivison et al. 2025, arXiv 2503.01807): cosine of pooled hidden states to a target set."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Ivison et al. 2025, Large-Scale Data Selection for Instruction Tuning (RDS+)",
        arxiv="2503.01807",
        code="hamishivi/automated-instruction-selection: minimal_multitask/compute_influence_cosinesim.py, as the research note "
             "reads it; not re-read",
        defaults={"reduce": "max (RDS+ --selection_method max): follows"},
        deviations=(
            "Embeds with the run's model (or dynamics_from's) rather than a large base model; the pooling is RDS+'s "
            "position-weighted mean of the last hidden state, L2-normalised.",
            "Keeps half by default (selector=top) instead of a fixed top-k per task; the multi-task round-robin is not implemented.",
        ),
        checked="tests/unit/selection/test_scorers.py: scores are cosines (at most 1), each target example scores 1 against its own set",
        notes="Random weights are allowed: similarity of random-feature embeddings still tracks shared content.",
    )

    name: str = "embed_sim"
    reduce: str = "max"
    """Over target examples: ``max`` (RDS+'s choice) or ``mean``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.reduce in ("max", "mean"), "selection.reduce", self.reduce, "must be one of ['max', 'mean']")

    @property
    def needs_trained_model(self) -> bool:
        # Pooled hidden states of random weights are random features of the tokens: similarity in
        # them still tracks shared content (experiments/gotd: RDS+ on the fresh tiny_llama selects
        # the target skill), unlike the losses of random weights.
        return False

    def score(self, ctx: SelectionContext) -> np.ndarray:
        pad = ctx.tokenizer.pad_token_id
        sims = embed_examples(ctx.model, ctx.train, pad, self.batch_size) @ embed_examples(ctx.model, self.target(ctx), pad, self.batch_size).T
        return sims.max(1) if self.reduce == "max" else sims.mean(1)


@register("selection", "kmeans_diverse")
@dataclass
class KMeansDiverse(ModelScorer):
    """Diversity by k-means on pooled hidden states (the static kMQ of Yu et al. 2024, arXiv 2409.11378)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Yu, Chen, Ahmadian & Fadaee 2024, Diversify and Conquer: Diversity-Centric Data Selection with Iterative "
              "Refinement (the static kMQ)",
        arxiv="2409.11378",
        code="for-ai/iterative-data-selection: selection/methods/kmeansiter.py (the iterative variant) — not checked",
        defaults={"clusters": "8 (the paper: K = 64 on large pools): differs: a small pool needs fewer"},
        deviations=(
            "Static only: no iterative rounds with reward-model feedback.",
            "Within a cluster, nearest-to-centroid first instead of sampling by a quality score; any budget is spread by "
            "round-robin, i.e. evenly over clusters (kMQ: in proportion to cluster size; selector=quota by=cluster does that).",
            "Embeddings are the run's model's pooled hidden states; scikit-learn KMeans (n_init 4) instead of the repo's faiss.",
        ),
        checked="tests/unit/selection/test_scorers.py: a budget split evenly across clusters, by hand on constructed points",
    )

    name: str = "kmeans_diverse"
    clusters: int = 8
    """K. The paper uses 64 on large pools; a small pool needs fewer."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.clusters >= 1, "selection.clusters", self.clusters, "must be a positive integer")

    @property
    def needs_trained_model(self) -> bool:
        return False  # clusters of random-feature embeddings still spread a budget over content (see EmbedSim)

    def score(self, ctx: SelectionContext) -> np.ndarray:
        x = embed_examples(ctx.model, ctx.train, ctx.tokenizer.pad_token_id, self.batch_size)
        return diversity_scores(x, min(self.clusters, len(x)), self.seed)


def diversity_scores(x: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """Scores whose top-k is a round-robin over clusters (nearest-to-centroid first in each), so any
    budget is spread evenly across clusters: score = −(rank within cluster) − distance/(1 + max)."""
    km = kmeans(x, clusters, seed)
    dist = np.linalg.norm(x - km.cluster_centers_[km.labels_], axis=1)
    rank = np.zeros(len(x))
    for c in range(clusters):
        members = np.flatnonzero(km.labels_ == c)
        rank[members[np.argsort(dist[members], kind="stable")]] = np.arange(len(members))
    return -rank - dist / (1.0 + dist.max())
