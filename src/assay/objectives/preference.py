"""What every preference objective shares: per-pair scores, the per-pair metrics, the runtime controller's place in the loss.

A preference objective is a per-pair loss ℓ(scores, β) over the tensors below (research note §7:
scores, then the per-pair loss, then the aggregator or controller, each orthogonal to the others).
Notation: lp(y) = Σ_t log π_θ(y_t | x, y_<t), ρ = lp(y) - lp_ref(y), h = ρ_w - ρ_l.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Union

from assay.lazy import torch

from assay.errors import check
from assay.objectives.base import ObjectiveConfig, ObjectiveOutput
from assay.objectives.logps import pair_logps

Beta = Union[float, "torch.Tensor"]
REF_SYNCS = ("none", "soft", "hard")


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
    wpo_log_weight: Optional[torch.Tensor] = None
    """log w of WPO (Zhou et al. 2024, arXiv 2406.11827, Eq. 2), detached: the sum over the pair's two
    responses of the mean over its tokens of log p(y_t) - log Σ_v p(v)²; None without ``wpo``."""

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


def pair_scores(model: torch.nn.Module, batch: dict, with_reference: bool, ld_alpha: Optional[float] = None, wpo: bool = False) -> PairScores:
    """One forward pass over the batch, in either layout (``collate.Collator``): the [chosen ; rejected]
    stack of two sequences per pair, or one shared-prompt segment per pair.

    ``ld_alpha`` (LD-DPO): every log-prob, the policy's and the reference's, is
    lp_head + α·(lp - lp_head), lp_head the sum over the first min(|y_w|, |y_l|) tokens of the
    response (:func:`assay.objectives.logps.pair_logps`; the reference's come precomputed as
    ``ref_*_head_logps``). ``wpo``: the pair's WPO log-weight (detached)."""
    lp = pair_logps(model, batch, heads=ld_alpha is not None, wpo=wpo)
    total = lp.sum if ld_alpha is None else desensitised(lp.sum, lp.head, ld_alpha)
    chosen, rejected = total.chunk(2)
    chosen_tokens, rejected_tokens = lp.count.to(chosen.dtype).chunk(2)
    scores = PairScores(chosen, rejected, chosen_tokens, rejected_tokens)
    if wpo:
        scores.wpo_log_weight = sum(lp.wpo_mean.chunk(2)).detach()
    if with_reference:
        ref_chosen, ref_rejected = batch["ref_chosen_logps"].to(chosen.dtype), batch["ref_rejected_logps"].to(chosen.dtype)
        if ld_alpha is not None:
            ref_chosen = desensitised(ref_chosen, batch["ref_chosen_head_logps"].to(chosen.dtype), ld_alpha)
            ref_rejected = desensitised(ref_rejected, batch["ref_rejected_head_logps"].to(chosen.dtype), ld_alpha)
        scores.ref_chosen, scores.ref_rejected = ref_chosen, ref_rejected
    return scores


def desensitised(total: torch.Tensor, head: torch.Tensor, alpha: float) -> torch.Tensor:
    """LD-DPO (Liu et al. 2024, arXiv 2409.06411): lp_head + α·(lp - lp_head), the tokens past the
    shorter response's length weighted by α (TRL's ``ld_alpha``: shared + α·tail)."""
    return head + alpha * (total - head)


@dataclass
class PreferenceObjective(ObjectiveConfig):
    """Shared fields of the pairwise objectives: how a pair is laid out in a batch, and the two
    modifiers that apply to any pairwise loss (LD-DPO's ``ld_alpha``, WPO's ``wpo``)."""

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
    ld_alpha: Optional[float] = None
    """LD-DPO (Liu et al. 2024, arXiv 2409.06411; TRL's ``ld_alpha``), in [0, 1]: every log-prob, the
    policy's and the reference's, becomes lp_head + α·(lp - lp_head), where lp_head sums the first
    min(|y_w|, |y_l|) response tokens, so the longer response's extra tokens weigh α. null: plain
    sums (α = 1 is the same loss). The reference's head log-probs are precomputed and cached with
    the rest. Method card: ``assay-list objective/modifier ld_dpo``."""
    wpo: bool = False
    """WPO (Zhou et al. 2024, arXiv 2406.11827, Eq. 2; TRL's ``use_weighting``): each pair's loss is
    multiplied by w = w(y_w)·w(y_l), w(y) = exp(mean_t[log p(y_t) - log Σ_v p(v)²]) under the current
    policy, detached. Method card: ``assay-list objective/modifier wpo``."""
    sorts_batch: ClassVar[bool] = False
    """True for losses computed on the batch's sorted log-ratios (AOT): the per-pair loss is the
    loss at a rank, so per-pair weights, filters and non-mean aggregators are refused."""

    def __post_init__(self) -> None:
        check(self.pack_factor >= 0, "objective.pack_factor", self.pack_factor, "must be >= 0 (0: one pair per row)")
        if self.ld_alpha is not None:
            check(0.0 <= self.ld_alpha <= 1.0, "objective.ld_alpha", self.ld_alpha, "must be in [0, 1] (or null)")
        super().__post_init__()
        if self.sorts_batch:
            what = f"objective={self.name} compares the batch's sorted log-ratios, so a loss belongs to a rank, not to a pair"
            check(self.aggregator.plain, "objective/aggregator", self.aggregator.name, f"{what}; use objective/aggregator=mean")
            check(self.controller.plain, "objective/controller", self.controller.name, f"{what}; use objective/controller=none")
            check(not self.wpo, "objective.wpo", self.wpo, f"{what} (TRL refuses use_weighting with aot too); set objective.wpo=false")

    @property
    def data_format(self) -> str:
        return "preference"

    @property
    def collation(self) -> dict:
        return {"share_prompt": self.share_prompt, "pack_factor": self.pack_factor}

    @property
    def custom_attention_mask(self) -> bool:
        return self.share_prompt

    @property
    def reference_heads(self) -> bool:
        """True when the reference log-probs of each response's first min(|y_w|, |y_l|) tokens are
        needed too (LD-DPO against a reference)."""
        return self.needs_reference and self.ld_alpha is not None

    @property
    def base_beta(self) -> Optional[float]:
        """β_0, the fixed β the loss scales by (None for losses without one)."""
        return None

    def pair_loss(self, s: PairScores, beta: Beta) -> torch.Tensor:
        """[B] per-pair loss."""
        raise TypeError(f"{type(self).__name__} does not implement pair_loss()")

    def stateful_pair_loss(self, s: PairScores, beta: Beta, state: torch.nn.Module, training: bool) -> torch.Tensor:
        """[B] per-pair loss of a loss with running state of its own (``build_loss_state``)."""
        raise TypeError(f"{type(self).__name__} has no running state")

    def build_loss_state(self) -> Optional[torch.nn.Module]:
        """Running state of the loss itself (BCO's reward shift), buffers only, or None. It takes the
        place of the controller's module (a loss with state refuses a controller)."""
        return None

    def build_controller(self) -> Optional[torch.nn.Module]:
        state = self.build_loss_state()
        return state if state is not None else super().build_controller()

    def rewards(self, s: PairScores, beta: Beta) -> tuple[torch.Tensor, torch.Tensor]:
        """Implicit rewards (r_w, r_l); the default is DPO's r = β·ρ."""
        return beta * s.chosen_ratio.detach(), beta * s.rejected_ratio.detach()

    def scores(self, model: torch.nn.Module, batch: dict) -> PairScores:
        return pair_scores(model, batch, self.needs_reference, self.ld_alpha, self.wpo)

    def compute(self, model: torch.nn.Module, batch: dict, training: bool = False, controller: Optional[torch.nn.Module] = None) -> ObjectiveOutput:
        out = self.from_scores(self.scores(model, batch), training, controller)
        out.weight = batch.get("weight")
        return out

    def from_scores(self, s: PairScores, training: bool = False, controller: Optional[torch.nn.Module] = None) -> ObjectiveOutput:
        """Loss and per-pair metrics from precomputed scores (the model-free half of ``compute``)."""
        n = s.policy_chosen.shape[0]
        beta, kept, metrics, state = self.base_beta, None, {}, None
        if getattr(controller, "loss_state", False):
            state, controller = controller, None
        if controller is not None:
            step = controller.step(s.margin, training)
            beta, kept = step.beta, step.kept
            metrics.update(kept=kept, beta_dpo_beta=step.beta.to(s.margin.dtype).expand(n),
                           beta_dpo_threshold=step.threshold.expand(n), beta_dpo_sigma=step.sigma.expand(n))
        loss = self.pair_loss(s, beta) if state is None else self.stateful_pair_loss(s, beta, state, training)
        if s.wpo_log_weight is not None:
            weight = torch.exp(s.wpo_log_weight).to(loss.dtype)
            loss = loss * weight
            metrics["wpo_weight"] = weight
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
    ref_sync: str = "none"
    """TR-DPO (Gorbatovski et al. 2024, arXiv 2404.09656; TRL's ``sync_ref_model``): ``none`` keeps the
    reference frozen (its log-probs precomputed and cached); ``soft`` keeps a live copy of the policy
    as the reference, updated every ``ref_sync_steps`` optimizer steps as θ_ref ← α·θ + (1-α)·θ_ref
    (α = ``ref_sync_alpha``); ``hard`` copies the policy (α = 1). The copy costs a second model in
    memory and in every checkpoint, and a reference forward per batch. Method card:
    ``assay-list objective/modifier tr_dpo``."""
    ref_sync_alpha: float = 0.6
    """α of ``ref_sync=soft`` in (0, 1] (TRL's ``ref_model_mixup_alpha`` default 0.6)."""
    ref_sync_steps: int = 512
    """τ: optimizer steps between syncs, ≥ 1 (TRL's ``ref_model_sync_steps`` default 512; 1: every step)."""

    def __post_init__(self) -> None:
        check(self.beta > 0, "objective.beta", self.beta, "must be > 0")
        check(self.ref_sync in REF_SYNCS, "objective.ref_sync", self.ref_sync, f"must be one of {list(REF_SYNCS)}")
        check(0.0 < self.ref_sync_alpha <= 1.0, "objective.ref_sync_alpha", self.ref_sync_alpha, "must be in (0, 1]")
        check(self.ref_sync_steps >= 1, "objective.ref_sync_steps", self.ref_sync_steps, "must be >= 1")
        super().__post_init__()

    @property
    def needs_reference(self) -> bool:
        return True

    @property
    def live_reference(self) -> bool:
        """True when the reference is a live copy of the policy (TR-DPO), its log-probs computed per batch."""
        return self.ref_sync != "none"

    def build_live_reference(self, policy: torch.nn.Module) -> Optional[torch.nn.Module]:
        if not self.live_reference:
            return None
        from assay.objectives.live_reference import LiveReference

        return LiveReference(policy, 1.0 if self.ref_sync == "hard" else self.ref_sync_alpha, self.ref_sync_steps)

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


# Deviations most reference-based cards share.
PRECOMPUTED_REFERENCE = ("Reference log-probs are precomputed once before training (TRL's precompute_ref_log_probs) instead of a live "
                         "reference forward pass: the same values for a frozen reference.")
SHARED_PROMPT = ("Each pair is one shared-prompt sequence by default (share_prompt=true, prefix sharing, arXiv 2410.20305): the "
                 "same log-probs up to float rounding; share_prompt=false restores two sequences per pair.")
TRL_PARITY = ("tests/unit/objectives/test_trl_parity.py: the per-pair loss against TRL 1.16's own DPOTrainer._compute_loss on random "
              "inputs and edge cases (margins ±50, responses of 1 and 500 tokens), to float rounding")


def trl_code(loss_type: str) -> str:
    return f"huggingface/trl v1.16.0: trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss, loss_type='{loss_type}')"
