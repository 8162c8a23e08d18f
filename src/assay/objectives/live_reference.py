"""TR-DPO's live reference (Gorbatovski et al. 2024, arXiv 2404.09656): a copy of the policy that
follows it, every ``steps`` optimizer steps, softly θ_ref ← α·θ + (1-α)·θ_ref or hard (α = 1), as
TRL's ``SyncRefModelCallback`` does with ``ref_model_mixup_alpha`` and ``ref_model_sync_steps``.

The copy is a submodule of the LightningModule (``AssayModule.live_reference``): outside the
optimizer (its parameters are frozen and ``configure_optimizers`` takes the policy's only), in eval
mode whatever the LightningModule's mode, and saved in every checkpoint together with the step of
its last sync, so a resumed run continues with the same reference. Its log-probs are computed for
each batch (no cache: the reference moves) and enter the batch as the precomputed ones would.
"""

from __future__ import annotations

import copy

import torch
from pytorch_lightning import Callback

from assay.objectives.logps import pair_logps


class LiveReference(torch.nn.Module):
    def __init__(self, policy: torch.nn.Module, alpha: float, steps: int):
        super().__init__()
        self.alpha, self.steps = float(alpha), int(steps)
        self.model = copy.deepcopy(policy).requires_grad_(False).eval()
        self.register_buffer("synced_at", torch.zeros((), dtype=torch.long))
        """The optimizer step of the last sync (0: none yet)."""

    def train(self, mode: bool = True) -> "LiveReference":
        super().train(mode)
        self.model.eval()  # a reference never runs dropout
        return self

    @torch.no_grad()
    def attach(self, batch: dict, heads: bool = False) -> dict:
        """The batch with this reference's log-probs in the columns a cached reference fills."""
        lp = pair_logps(self.model, batch, heads=heads)
        chosen, rejected = lp.sum.chunk(2)
        out = {**batch, "ref_chosen_logps": chosen, "ref_rejected_logps": rejected}
        if heads:
            out["ref_chosen_head_logps"], out["ref_rejected_head_logps"] = lp.head.chunk(2)
        return out

    @torch.no_grad()
    def sync(self, policy: torch.nn.Module, step: int) -> bool:
        """θ_ref ← α·θ + (1-α)·θ_ref at every multiple of ``steps`` (once per step); True when it synced."""
        if step <= 0 or step % self.steps or step <= int(self.synced_at):
            return False
        for ref, current in zip(self.model.parameters(), policy.parameters(), strict=True):
            if self.alpha >= 1.0:
                ref.copy_(current.detach())
            else:
                ref.mul_(1.0 - self.alpha).add_(current.detach().to(ref.dtype), alpha=self.alpha)
        self.synced_at.fill_(step)
        return True


class ReferenceSync(Callback):
    """Syncs the LightningModule's live reference after each optimizer step. Placed before the
    checkpoint callbacks, so a checkpoint written at step s holds the reference synced at s."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if getattr(pl_module, "live_reference", None) is not None:
            pl_module.live_reference.sync(pl_module.model, trainer.global_step)
