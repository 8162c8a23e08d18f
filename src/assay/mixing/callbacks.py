"""Lightning callbacks of the mixture axis: the online mixer and the realised-mixture recorder."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch

from assay.mixing.base import DomainStats, Mixer


class OnlineMixing(pl.Callback):
    """Every ``update_every`` optimizer steps: the per-domain signals the mixer declares, gathered over
    the batches trained on since the last update (``assay.mixing.signals``: training losses from the
    training step itself, excess over a reference's per-example losses, fresh validation losses) -> the
    mixer's update -> the sampler's weights from the next batch it draws. Weights and signals go to
    ``mixing.csv`` and the logger (``mixing/weight/<domain>``, ``mixing/<signal>/<domain>``) at every
    update; the mixer state, the gatherers' sums and the history travel in the checkpoint."""

    def __init__(self, mixer: Mixer, update_every: int, warmup_steps: int, run_dir: Path, signals: list):
        self.mixer, self.update_every, self.warmup_steps = mixer, update_every, warmup_steps
        self.run_dir, self.signals = Path(run_dir), list(signals)
        assert self.signals and self.signals[0].name == "train_loss", "train_loss is gathered first (its counts are DomainStats.count)"
        self.index = {d: i for i, d in enumerate(mixer.domains)}
        self.history: list[dict] = []
        self._last_step = 0

    @property
    def state_key(self) -> str:
        return "OnlineMixing"

    def on_train_start(self, trainer, pl_module) -> None:
        for signal in self.signals:
            signal.on_train_start(pl_module, self.mixer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        losses = outputs["per_sample"].loss.detach().float().cpu().numpy()
        domains = np.array([self.index[s] for s in batch["sources"]])
        for signal in self.signals:
            signal.on_batch(losses, domains, batch)
        step = trainer.global_step
        if step != self._last_step and step % self.update_every == 0 and step > self.warmup_steps:
            self._update(trainer, pl_module, step)
        self._last_step = step

    def _update(self, trainer, pl_module, step: int) -> None:
        self._sum_over_ranks(pl_module.device)
        count = self.signals[0].count.copy()
        values = {s.name: v for s in self.signals if (v := s.value(pl_module, count)) is not None}
        logged = self.mixer.update(DomainStats(count, values))
        sampler = trainer.datamodule.sampler
        weights, first = self._agree(self.mixer.weights, sampler._next_block, pl_module.device)
        first = sampler.set_weights(weights, first=first)
        record = {"step": step, "from_batch": first}
        for name, series in {"train_loss": values["train_loss"], **logged}.items():
            for d, v in zip(self.mixer.domains, np.asarray(series, dtype=np.float64).tolist()):
                record[f"mixing/{name}/{d}"] = v
        self.history.append(record)
        self._write_csv()
        if trainer.logger is not None:
            trainer.logger.log_metrics({k: v for k, v in record.items() if k.startswith("mixing/") and np.isfinite(v)}, step=step)
        for signal in self.signals:
            signal.reset()

    # ---- several processes: one mixture for the whole run ---------------------------------------
    def _sum_over_ranks(self, device) -> None:
        """Per-domain sums over every rank's batches since the last update (each rank saw its own
        shard of every global batch), so every rank updates from the same statistics."""
        from assay.run import distributed

        if distributed.world_size() < 2:
            return
        import torch.distributed as dist

        sums = [(signal, name) for signal in self.signals for name in signal.sums]
        if not sums:
            return
        k = len(self.index)
        packed = torch.tensor(np.concatenate([getattr(g, name) for g, name in sums]), dtype=torch.float64, device=device)
        dist.all_reduce(packed)
        values = packed.cpu().numpy()
        for i, (g, name) in enumerate(sums):
            part = values[i * k : (i + 1) * k]
            setattr(g, name, np.rint(part).astype(np.int64) if name == "count" else part)

    def _agree(self, weights: np.ndarray, next_block: int, device) -> tuple[np.ndarray, int]:
        """Rank 0's new weights (validation losses may differ in the last float bits between devices),
        applied from the same global batch on every rank: the first batch no rank has drawn yet."""
        from assay.run import distributed

        if distributed.world_size() < 2:
            return weights, next_block
        import torch.distributed as dist

        first = torch.tensor([next_block], dtype=torch.int64, device=device)
        dist.all_reduce(first, op=dist.ReduceOp.MAX)
        shared = torch.tensor(np.asarray(weights, dtype=np.float64), device=device)
        dist.broadcast(shared, src=0)
        return shared.cpu().numpy(), int(first.item())

    def _write_csv(self) -> None:
        write_history(self.run_dir, self.history)

    def on_train_end(self, trainer, pl_module) -> None:
        write_history(self.run_dir, self.history, self.summary())

    def summary(self) -> dict:
        return {"updates": len(self.history), **self.mixer.outputs()}

    def state_dict(self) -> dict:
        state = {"mixer": self.mixer.state_dict(), "history": self.history, "last_step": self._last_step}
        for signal in self.signals:
            state.update(signal.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        self.mixer.load_state_dict(state["mixer"])
        self.history = list(state["history"])
        self._last_step = int(state["last_step"])
        for signal in self.signals:
            signal.load_state_dict(state)
        self._write_csv()


class MixtureRecorder(pl.Callback):
    """The realised mixture: examples and tokens per domain in every epoch (what the loader actually
    served), written to ``mixture.json`` at every epoch end and reported in ``summary.json``."""

    def __init__(self, tokens_by_id: dict[str, int], run_dir: Path):
        self.tokens_by_id, self.run_dir = tokens_by_id, Path(run_dir)
        self.epochs: dict[int, dict[str, dict[str, int]]] = {}
        self._all_ranks: dict[int, dict[str, dict[str, int]]] | None = None  # the sum over ranks, under several processes

    @property
    def state_key(self) -> str:
        return "MixtureRecorder"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        epoch = self.epochs.setdefault(trainer.current_epoch, {})
        for i, s in zip(batch["ids"], batch["sources"]):
            d = epoch.setdefault(s, {"examples": 0, "tokens": 0})
            d["examples"] += 1
            d["tokens"] += int(self.tokens_by_id.get(i, 0))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.write()

    def on_train_end(self, trainer, pl_module) -> None:
        self.write()

    def summary(self) -> dict:
        epochs = self._all_ranks if self._all_ranks is not None else self.epochs
        per_epoch = [{"epoch": e, "domains": {s: dict(v) for s, v in sorted(d.items())}} for e, d in sorted(epochs.items())]
        total: dict[str, dict[str, int]] = {}
        for d in epochs.values():
            for s, v in d.items():
                t = total.setdefault(s, {"examples": 0, "tokens": 0})
                t["examples"] += v["examples"]
                t["tokens"] += v["tokens"]
        return {"per_epoch": per_epoch, "total": dict(sorted(total.items()))}

    def write(self) -> None:
        from assay.run import distributed

        if distributed.world_size() > 1:  # every rank served its own shard: the run's mixture is their sum
            self._all_ranks = {}
            for part in distributed.gather_objects(self.epochs):
                for e, d in part.items():
                    for source, v in d.items():
                        t = self._all_ranks.setdefault(e, {}).setdefault(source, {"examples": 0, "tokens": 0})
                        t["examples"] += v["examples"]
                        t["tokens"] += v["tokens"]
            if not distributed.is_main():
                return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / "mixture.json.tmp"
        tmp.write_text(json.dumps(self.summary(), indent=2))
        tmp.rename(self.run_dir / "mixture.json")

    def state_dict(self) -> dict:
        return {"epochs": {str(e): d for e, d in self.epochs.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = {int(e): {s: dict(v) for s, v in d.items()} for e, d in state["epochs"].items()}


def _per_sample_losses(pl_module, batches: list[dict]):
    """(batch sources, [B] per-sample losses) of each batch, in eval mode; the caller chooses
    whether gradients flow."""
    model = pl_module.model
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            batch = {k: (v.to(pl_module.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            if hasattr(pl_module, "with_reference"):  # TR-DPO's live reference
                batch = pl_module.with_reference(batch)
            out = pl_module.objective.compute(model, batch, training=False, controller=pl_module.controller)
            yield batch["sources"], out.loss
    finally:
        model.train(was_training)


def domain_batches(split, domains: list[str], per_domain: int, pad_id: int, data, collation: dict, with_generation: bool) -> list[dict]:
    """Up to ``per_domain`` rows of each domain of ``split``, collated in eval-size batches."""
    from assay.data.collate import Collator
    from assay.data.datamodule import Rows

    sources = split["source"]
    picked: list[int] = []
    for d in domains:
        picked.extend([i for i, s in enumerate(sources) if s == d][:per_domain])
    rows = Rows(split)
    collate = Collator(pad_id, data.format, with_generation=with_generation, **collation)
    return [collate(rows.__getitems__(picked[i : i + data.eval_batch_size])) for i in range(0, len(picked), data.eval_batch_size)]


@torch.no_grad()
def domain_losses(pl_module, batches: list[dict], domains: list[str]) -> np.ndarray:
    """Mean per-example loss of each domain over ``batches`` (eval mode, no gradient)."""
    index = {d: i for i, d in enumerate(domains)}
    total, count = np.zeros(len(domains)), np.zeros(len(domains))
    for sources, loss in _per_sample_losses(pl_module, batches):
        idx = np.array([index[s] for s in sources])
        np.add.at(total, idx, loss.float().cpu().numpy())
        np.add.at(count, idx, 1)
    return total / np.maximum(count, 1)


def domain_gradients(pl_module, batches: list[dict], domains: list[str]) -> np.ndarray:
    """[k, P] mean loss gradient of each domain over ``batches`` (eval mode; ``.grad`` untouched)."""
    index = {d: i for i, d in enumerate(domains)}
    params = [p for p in pl_module.model.parameters() if p.requires_grad]
    grads = [torch.zeros(sum(p.numel() for p in params)) for _ in domains]
    counts = np.zeros(len(domains))
    for sources, loss in _per_sample_losses(pl_module, batches):
        idx = [index[s] for s in sources]
        for d in sorted(set(idx)):
            mask = torch.tensor([i == d for i in idx], device=loss.device)
            g = torch.autograd.grad(loss[mask].sum(), params, retain_graph=True)
            grads[d] += torch.cat([x.reshape(-1) for x in g]).float().cpu()
            counts[d] += int(mask.sum())
    return np.stack([(g / max(c, 1)).numpy() for g, c in zip(grads, counts)])


def write_history(run_dir: Path, history: list[dict], summary: Optional[dict] = None) -> None:
    """The mixing weights and signals at every update (``mixing.csv``) and, at the end, the mixer's
    outputs (``mixing.json``): written by the main process only, the CSV replaced atomically."""
    from assay.run import distributed

    if not distributed.is_main():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    if history:
        tmp = run_dir / "mixing.csv.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        tmp.rename(run_dir / "mixing.csv")
    if summary is not None:
        (run_dir / "mixing.json").write_text(json.dumps(summary, indent=2))
