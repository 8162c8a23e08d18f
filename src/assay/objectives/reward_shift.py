"""BCO's reward shift δ (Jung et al. 2024, arXiv 2404.04656): the running mean of the implicit rewards.

As TRL computed it (``RunningMoments`` in TRL's BCOTrainer and in DPOTrainer's ``bco_pair`` up to
v0.x): each training batch contributes the mean of its 2B rewards (one value per rank, averaged
over ranks), δ is the mean of all such batch means so far, and it is updated before the loss, so
δ already includes the current batch. Evaluation reads δ without updating it. The state is two
buffers of a ``torch.nn.Module`` the LightningModule owns (``objective.build_controller()``), so it
travels in every checkpoint and a resumed run continues with the same δ.
"""

from __future__ import annotations

import torch

from assay.objectives.aggregators import gather_across_ranks


class RewardShift(torch.nn.Module):
    loss_state = True
    """Marks the loss's own running state (``PreferenceObjective.from_scores`` hands it to the loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def shift(self, batch_mean: torch.Tensor, training: bool) -> torch.Tensor:
        """δ after this batch: updated with the batch's mean reward (every rank's) when training."""
        if training:
            everyone, _ = gather_across_ranks(batch_mean.detach().double().reshape(1), differentiable=False, fill=float("nan"))
            k = everyone.numel()
            self.mean.add_((everyone.mean() - self.mean) * k / (self.count + k))
            self.count.add_(k)
        return self.mean.clone()
