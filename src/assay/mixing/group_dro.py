"""DoReMi's proxy at run time: the α-reweighted loss (``GroupDRO``, owned by the LightningModule so
α travels in every checkpoint) and the recorder of α over training (``mixing.csv``, ``mixing.json``).
The recipe and its equations are in ``assay.mixing.doremi``; their tensor numerics (the clipped
per-token excess, the reweighted loss, the update of α) are here, at the end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from assay.errors import UserError
from assay.mixing.callbacks import write_history


class GroupDRO(torch.nn.Module):
    """The proxy's domain weights as buffers of the LightningModule (so they travel in every
    checkpoint): α, the last λ of every domain, the running average of α and the update count."""

    def __init__(self, domains: list[str], initial: np.ndarray, eta: float, smoothing: float, update_every: int, warmup_steps: int, reference):
        super().__init__()
        self.domains, self.eta, self.smoothing = list(domains), eta, smoothing
        self.update_every, self.warmup_steps = update_every, warmup_steps
        self.index = {d: i for i, d in enumerate(self.domains)}
        k = len(self.domains)
        self.register_buffer("weights", torch.tensor(np.asarray(initial, dtype=np.float64) / np.sum(initial)))
        self.register_buffer("scores", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("average", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        self._sums = torch.zeros(k, dtype=torch.float64)
        self._counts = torch.zeros(k, dtype=torch.float64)
        self.last: dict = {}
        object.__setattr__(self, "_reference", reference)  # not a submodule: never in a checkpoint or the optimiser

    def forward(self, out, batch: dict, step_ends: bool, global_step: int):
        """The proxy's batch loss; at the last micro-batch of an optimizer step, α is updated first
        (from every micro-batch and rank of the step) and the loss reads the updated α, as the
        released ``training_step`` does."""
        from assay.run import distributed
        from assay.objectives.logps import sequence_logps

        if out.token_logps is None:
            raise UserError("objective", "?", "DoReMi's proxy needs per-token log-probs; use objective=sft")
        reference = self._reference.to(out.token_logps.device)
        with torch.no_grad():
            ref = sequence_logps(reference, batch["input_ids"], batch["attention_mask"], batch["labels"]).token_logps
        domain_ids = torch.tensor([self.index[s] for s in batch["sources"]], device=out.token_logps.device)
        mask = out.token_mask.to(out.token_logps.dtype)
        sums, counts = clipped_excess(out.token_logps, ref, mask, domain_ids, len(self.domains))
        self._sums = self._sums.to(sums.device) + sums
        self._counts = self._counts.to(counts.device) + counts
        if step_ends:
            step = global_step + 1  # the optimizer step this micro-batch completes
            if step % self.update_every == 0 and step > self.warmup_steps:
                self._update(distributed.world_size())
            self._sums, self._counts = torch.zeros_like(self._sums), torch.zeros_like(self._counts)
        return reweighted_loss(out.token_logps, mask, domain_ids, self.weights, distributed.world_size())

    @torch.no_grad()
    def _update(self, world: int) -> None:
        sums, counts = self._sums.clone(), self._counts.clone()
        if world > 1:
            import torch.distributed as dist

            packed = torch.cat([sums, counts])
            dist.all_reduce(packed)
            sums, counts = packed[: len(sums)], packed[len(sums):]
        present = counts > 0
        self.scores.copy_(torch.where(present, sums / counts.clamp(min=1), self.scores))
        self.weights.copy_(doremi_update(self.weights, self.scores, self.eta, self.smoothing))
        self.updates += 1
        self.average.copy_(self.average + (self.weights - self.average) / self.updates)
        self.last = {"weight": self.weights.tolist(), "excess_loss": self.scores.tolist(), "average_weight": self.average.tolist()}

    def outputs(self) -> dict:
        avg = self.average if int(self.updates) else self.weights
        return {"updates": int(self.updates), "final_weights": dict(zip(self.domains, self.weights.tolist())),
                "average_weights": dict(zip(self.domains, avg.tolist()))}


class DoReMiRecorder(pl.Callback):
    """Writes the proxy's α, λ and running average at every update to ``mixing.csv`` (at logging
    steps and at the end) and ``mixing.json`` (the average: the recipe's output) at the end."""

    def __init__(self, dro: GroupDRO, run_dir: Path):
        self.dro, self.run_dir = dro, Path(run_dir)
        self.history: list[dict] = []
        self._seen = 0

    @property
    def state_key(self) -> str:
        return "DoReMiRecorder"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        updates = int(self.dro.updates)
        if updates == self._seen or not self.dro.last:
            return
        self._seen = updates
        record = {"step": trainer.global_step}
        for name, values in self.dro.last.items():
            for d, v in zip(self.dro.domains, values):
                record[f"mixing/{name}/{d}"] = v
        self.history.append(record)
        if trainer.logger is not None and trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            trainer.logger.log_metrics({k: v for k, v in record.items() if k.startswith("mixing/") and math.isfinite(v)}, step=trainer.global_step)
            self._write_csv()

    def _write_csv(self) -> None:
        write_history(self.run_dir, self.history)

    def on_train_end(self, trainer, pl_module) -> None:
        write_history(self.run_dir, self.history, self.summary())

    def summary(self) -> dict:
        return self.dro.outputs()

    def state_dict(self) -> dict:
        return {"history": self.history, "seen": self._seen}

    def load_state_dict(self, state: dict) -> None:
        self.history, self._seen = list(state["history"]), int(state["seen"])


def clipped_excess(token_logps, ref_token_logps, mask, domain_ids, k: int):
    """Per domain: the sum over its response tokens of max(ℓ_θ − ℓ_ref, 0) (ℓ = −log p; clipped per
    token, as ``update_domain_weights`` does) and the number of those tokens."""
    excess = torch.clamp(ref_token_logps - token_logps.detach(), min=0.0) * mask
    per_example = excess.sum(-1).double()
    tokens = mask.sum(-1).double()
    sums = torch.zeros(k, dtype=torch.float64, device=excess.device).index_add(0, domain_ids, per_example)
    counts = torch.zeros(k, dtype=torch.float64, device=excess.device).index_add(0, domain_ids, tokens)
    return sums, counts


def reweighted_loss(token_logps, mask, domain_ids, weights, world: int = 1):
    """Σ_t α_d(t)·ℓ(t) / Σ_t α_d(t) over the batch's response tokens (every rank's tokens in the
    normaliser; multiplied back by the world size because data parallelism averages gradients)."""
    w = weights.to(token_logps.dtype)[domain_ids][:, None] * mask
    normaliser = w.sum()
    if world > 1:
        import torch.distributed as dist

        normaliser = normaliser.detach().clone()
        dist.all_reduce(normaliser)
        normaliser = normaliser / world
    return -(token_logps * w.detach()).sum() / torch.clamp(normaliser.detach(), min=1e-10)


def doremi_update(weights, scores, eta: float, smoothing: float):
    """α' = softmax(log α + η·λ); α ← (1 − c)·α' + c/k (Algorithm 1, step 2)."""
    new = torch.softmax(torch.log(weights) + eta * scores, dim=0)
    return (1.0 - smoothing) * new + smoothing / len(new)
