"""Controllers (config group ``objective/controller``): running state that adapts the loss to the batch.

``none`` keeps β fixed and every sample. ``beta_dpo`` is β-DPO (Wu et al., NeurIPS 2024,
arXiv 2407.08639): batch-level dynamic β from reward-margin statistics plus β-guided filtering
(the statistics and their update are in ``assay.objectives.beta_dpo``). A controller entry holds
its settings, checks that the loss suits it, and builds the runtime ``torch.nn.Module`` of buffers
that the LightningModule owns as ``controller``, so its state travels in every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from omegaconf import II, MISSING

from assay.cards import MethodCard
from assay.cards import MethodCard
from assay.errors import check
from assay.registry import register

if TYPE_CHECKING:
    import torch


@dataclass
class Controller:
    """Running statistics of a dynamic objective, or none."""

    name: str = MISSING
    plain: ClassVar[bool] = False
    """True for the fixed β: it adds nothing to a run's method label (``objective.method``)."""

    def check(self, objective: Any) -> None:
        """Refuse a loss this controller cannot drive (one line naming the key to change)."""

    def build(self, objective: Any) -> Optional["torch.nn.Module"]:
        """The runtime state (buffers only) for ``objective``, or None for a static objective."""
        return None


@register("objective/controller", "none")
@dataclass
class NoController(Controller):
    """No controller: a fixed β, every sample kept."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        notes="A fixed β and every sample kept: the baseline for objective/controller=beta_dpo.",
    )

    name: str = "none"
    plain: ClassVar[bool] = True


@register("objective/controller", "beta_dpo")
@dataclass
class BetaDPO(Controller):
    """β-DPO: batch-level dynamic β and β-guided filtering (Wu et al., NeurIPS 2024, arXiv 2407.08639); needs a reference-based loss.

    β_batch = β_0·[1 + α·(mean_kept(M_i) - M_0)], M_0 a moving average with momentum m, a fraction ρ
    of pairs kept by Gaussian weights around M_0. Symbols → fields: β_0 → the loss's ``beta``,
    α → ``alpha``, m → ``momentum``, ρ → ``keep``.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Wu et al. 2024, β-DPO: Direct Preference Optimization with Dynamic β (NeurIPS 2024)",
        arxiv="2407.08639",
        code="junkangwu/beta-DPO: trainers.py (the dynamic-β and filtering branch of the DPO loss)",
        defaults={
            "alpha": "0.6 (the authors' README command, loss.a=0.6): follows",
            "momentum": "0.9 (paper: m = 0.9): follows",
            "keep": "0.8 (paper: ρ = 0.8, the reference code's 1 − mode_weight): follows",
        },
        deviations=(
            "M_i is the unscaled log-ratio margin h_i, as in the authors' code; whether the paper's M_i carries β_0 is not checked.",
            "Evaluation batches read the statistics without updating them (the reference code lets eval batches move them; "
            "TRL PR #5667 made the same choice).",
            "σ has an epsilon, and a zero-variance batch (step 0: policy = reference) falls back to uniform filter weights instead of NaN.",
            "The kept pairs are drawn with a generator seeded by (seed, update count): every rank draws the same mask and a "
            "resumed run draws what the uninterrupted run would have.",
            "The statistics cover the optimizer batch (every rank, and every micro-batch of a gradient-accumulation step, whose "
            "margins are computed first without gradient); each micro-batch's loss is then the mean over its own kept pairs, "
            "which equals the optimizer batch's mean when the micro-batches keep equally many pairs.",
            "The paper's batch is 64 pairs; assay does not change data.batch_size for you and prints a line when the optimizer "
            "batch is smaller.",
        ),
        checked="tests/unit/objectives/test_objectives.py: the β and filter update against hand-derived numbers; "
                "tests/integration/test_objectives_run.py: statistics over the optimizer batch under gradient accumulation; "
                "tests/integration/test_ddp.py: two processes equal one process over the global batch",
    )

    name: str = "beta_dpo"
    per_optimizer_batch: ClassVar[bool] = True
    """The statistics cover the whole optimizer batch: every micro-batch of a gradient-accumulation
    step (computed first) and every rank."""
    alpha: float = 0.6
    """α: how strongly β follows the batch's margin relative to M_0 (0 = fixed β). 0.6 is the value
    in the authors' README command (``loss.a=0.6``)."""
    momentum: float = 0.9
    """m: momentum of the moving averages M_0 and σ, in [0, 1) (paper: m = 0.9)."""
    keep: float = 0.8
    """ρ: fraction of each batch kept by the Gaussian filter, in (0, 1] (paper: 0.8)."""
    seed: int = II("seed")
    """Seeds the sampling of kept pairs."""

    def __post_init__(self) -> None:
        check(0.0 <= self.momentum < 1.0, "objective.controller.momentum", self.momentum, "must be in [0, 1)")
        check(0.0 < self.keep <= 1.0, "objective.controller.keep", self.keep, "must be in (0, 1]")

    def check(self, objective: Any) -> None:
        check(
            objective.needs_reference,
            "objective/controller",
            self.name,
            f"beta_dpo adapts β from reference log-ratio margins, but objective={objective.name} is not reference-based; "
            "use objective/controller=none or a reference-based loss (dpo, cdpo, rdpo, ipo, hinge)",
        )

    def build(self, objective: Any) -> "torch.nn.Module":
        from assay.objectives.beta_dpo import BetaDPOController

        return BetaDPOController(objective.base_beta, self.alpha, self.momentum, self.keep, int(self.seed))
