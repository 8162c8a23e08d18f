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

    name: str = "beta_dpo"
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
