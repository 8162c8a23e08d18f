"""What every preference objective shares: per-pair scores, the per-pair metrics, the runtime controller's place in the loss.

A preference objective is a per-pair loss ℓ(scores, β) over the tensors below (research note §7:
scores, then the per-pair loss, then the aggregator or controller, each orthogonal to the others).
Notation: lp(y) = Σ_t log π_θ(y_t | x, y_<t), ρ = lp(y) - lp_ref(y), h = ρ_w - ρ_l.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from assay.lazy import torch

from assay.errors import check
from assay.objectives.base import ObjectiveConfig, ObjectiveOutput
from assay.objectives.logps import pair_logps

Beta = Union[float, "torch.Tensor"]


@dataclass
class PairScores:
    """Per-pair tensors, each [B]: everything a per-pair loss may read."""

    policy_chosen: torch.Tensor
    """lp(y_w): summed log-prob of the chosen completion under the policy."""
    policy_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    """|y_w|: completion tokens of the chosen response (≥ 1)."""
    rejected_tokens: torch.Tensor
    ref_chosen: Optional[torch.Tensor] = None
    """lp_ref(y_w), precomputed before training; None for reference-free objectives."""
    ref_rejected: Optional[torch.Tensor] = None

    @property
    def chosen_ratio(self) -> torch.Tensor:
        """ρ_w = lp(y_w) - lp_ref(y_w)."""
        return self.policy_chosen - self.ref_chosen

    @property
    def rejected_ratio(self) -> torch.Tensor:
        return self.policy_rejected - self.ref_rejected

    @property
    def margin(self) -> torch.Tensor:
        """h = ρ_w - ρ_l, the DPO logit before β."""
        return self.chosen_ratio - self.rejected_ratio

    @property
    def mean_margin(self) -> torch.Tensor:
        """h̄ = ρ_w/|y_w| - ρ_l/|y_l|: the length-averaged margin (IPO as TRL computes it)."""
        return self.chosen_ratio / self.chosen_tokens - self.rejected_ratio / self.rejected_tokens


def pair_scores(model: torch.nn.Module, batch: dict, with_reference: bool) -> PairScores:
    """One forward pass over the batch, in either layout (``collate.Collator``): the [chosen ; rejected]
    stack of two sequences per pair, or one shared-prompt segment per pair."""
    lp = pair_logps(model, batch)
    chosen, rejected = lp.sum.chunk(2)
    chosen_tokens, rejected_tokens = lp.count.to(chosen.dtype).chunk(2)
    scores = PairScores(chosen, rejected, chosen_tokens, rejected_tokens)
    if with_reference:
        scores.ref_chosen = batch["ref_chosen_logps"].to(chosen.dtype)
        scores.ref_rejected = batch["ref_rejected_logps"].to(chosen.dtype)
    return scores


@dataclass
class PreferenceObjective(ObjectiveConfig):
    """Shared fields of the pairwise objectives: how a pair is laid out in a batch."""

    share_prompt: bool = True
    """Score each pair as one sequence ``prompt + chosen + rejected`` in which the rejected tokens
    attend to the prompt and themselves only and continue the prompt's positions (prefix sharing,
    Wang et al. 2024, arXiv 2410.20305), instead of two sequences ``prompt + chosen`` and
    ``prompt + rejected``. The log-probs are the same up to float rounding; the forward and
    backward see P + C + R tokens per pair instead of 2P + C + R (plus padding). Used in training,
    evaluation and the reference log-probs. Needs a model with ``sdpa`` or ``eager`` attention
    (the ones that take a custom 4D mask); ``false`` restores two sequences per pair."""
    pack_factor: float = 2.0
    """With ``share_prompt``: pairs are packed whole (first fit, longest first) into rows of at most
    max(1, pack_factor) times the batch's longest pair, so short pairs share a row instead of being
    padded to the longest; 0 puts one pair per row. Longer rows cost more attention per token. On
    the DPO throughput benchmark's pairs (11-26 tokens) 2 cuts padding from 30% to 8% of the tokens
    (benchmarks/README.md, "DPO throughput")."""

    def __post_init__(self) -> None:
        check(self.pack_factor >= 0, "objective.pack_factor", self.pack_factor, "must be >= 0 (0: one pair per row)")
        super().__post_init__()

    @property
    def data_format(self) -> str:
        return "preference"

    @property
    def collation(self) -> dict:
        return {"share_prompt": self.share_prompt, "pack_factor": self.pack_factor}

    @property
    def base_beta(self) -> Optional[float]:
        """β_0, the fixed β the loss scales by (None for losses without one)."""
        return None

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        """[B] per-pair loss."""
        raise TypeError(f"{type(self).__name__} does not implement pair_loss()")

    def rewards(self, s: PairScores, beta: Beta) -> tuple[torch.Tensor, torch.Tensor]:
        """Implicit rewards (r_w, r_l); the default is DPO's r = β·ρ."""
        return beta * s.chosen_ratio.detach(), beta * s.rejected_ratio.detach()

    def compute(self, model: torch.nn.Module, batch: dict, training: bool = False, controller: Optional[torch.nn.Module] = None) -> ObjectiveOutput:
        s = pair_scores(model, batch, self.needs_reference)
        return self.from_scores(s, training, controller)

    def from_scores(self, s: PairScores, training: bool = False, controller: Optional[torch.nn.Module] = None) -> ObjectiveOutput:
        """Loss and per-pair metrics from precomputed scores (the model-free half of ``compute``)."""
        n = s.policy_chosen.shape[0]
        beta, kept, metrics = self.base_beta, None, {}
        if controller is not None:
            step = controller.step(s.margin, training)
            beta, kept = step.beta, step.kept
            metrics.update(kept=kept, beta_dpo_beta=step.beta.to(s.margin.dtype).expand(n),
                           beta_dpo_threshold=step.threshold.expand(n), beta_dpo_sigma=step.sigma.expand(n))
        loss = self.pair_loss(s, beta)
        # Rewards and confidence are scaled by the fixed β_0, never by a controller's batch β: β-DPO's
        # β_batch depends on which other pairs share the batch, so a pair's records scaled by it would
        # not compare across batches (a clamped β ≈ 1e-3 puts every confidence at ≈ 0.5). The β the
        # loss used is its own column, ``beta_dpo_beta``.
        recorded_beta = self.base_beta
        r_w, r_l = self.rewards(s, recorded_beta if recorded_beta is not None else 1.0)
        metrics.update(logp_chosen=s.policy_chosen.detach(), logp_rejected=s.policy_rejected.detach())
        if self.needs_reference:
            metrics.update(logratio_chosen=s.chosen_ratio.detach(), logratio_rejected=s.rejected_ratio.detach(), margin=s.margin.detach())
        if recorded_beta is not None:
            metrics["beta"] = torch.full((n,), float(recorded_beta), dtype=loss.dtype, device=loss.device)
        reward_margin = r_w - r_l
        metrics.update(
            reward_chosen=r_w,
            reward_rejected=r_l,
            reward_margin=reward_margin,
            pref_acc=(reward_margin > 0).float(),
            # the model's preference probability σ(r_w - r_l): the dynamics' confidence for pairs
            confidence=torch.sigmoid(reward_margin),
        )
        return ObjectiveOutput(loss=loss, metrics=metrics, kept=kept)


@dataclass
class ReferenceObjective(PreferenceObjective):
    """A pairwise loss of the reference log-ratios, scaled by β."""

    beta: float = 0.1
    """β: strength of the KL constraint to the reference (DPO paper default 0.1)."""

    def __post_init__(self) -> None:
        check(self.beta > 0, "objective.beta", self.beta, "must be > 0")
        super().__post_init__()

    @property
    def needs_reference(self) -> bool:
        return True

    @property
    def base_beta(self) -> Optional[float]:
        return self.beta


@dataclass
class FlipRateObjective(ReferenceObjective):
    """A reference loss that assumes each pair's label is flipped with probability ε (cDPO, rDPO)."""

    epsilon: float = 0.1
    """ε: assumed probability that a pair's label is flipped, in [0, 0.5) (0.1: the value TRL's
    DPOConfig cites from the robust DPO paper)."""

    def __post_init__(self) -> None:
        check(0.0 <= self.epsilon < 0.5, "objective.epsilon", self.epsilon, "must be in [0, 0.5)")
        super().__post_init__()
