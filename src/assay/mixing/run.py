"""Wiring the mixture axis into a run: the realised-mixture recorder always; for drawn mixtures
(schedules, online mixers) the domain-drawing sampler and, for online mixers, their callback."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import datasets
import numpy as np

from assay.data.collate import row_tokens
from assay.errors import UserError
from assay.mixing.callbacks import MixtureRecorder, OnlineMixing
from assay.mixing.sampler import DomainSampler
from assay.mixing.signals import SignalContext, gatherers


@dataclass
class MixingRun:
    recorder: MixtureRecorder
    online: Optional[OnlineMixing] = None
    sampler: Optional[DomainSampler] = None
    info: dict[str, Any] = field(default_factory=dict)
    reweighting: Any = None
    """A module the training step hands the batch loss to (a mixture that ``reweights_loss``: the α-reweighted loss)."""
    weights_recorder: Any = None

    @property
    def callbacks(self) -> list:
        return [self.recorder] + [c for c in (self.online, self.weights_recorder) if c is not None]

    def summary(self) -> dict[str, Any]:
        out = {**self.info, "realised": self.recorder.summary()}
        if self.online is not None:
            out["online"] = self.online.summary()
        if self.weights_recorder is not None:
            out["online"] = self.weights_recorder.summary()
        return out


def setup_mixing(spec, examples, tokenized: datasets.DatasetDict, datamodule, run_dir: Path, cache_dir: Path, tokenizer=None) -> MixingRun:
    mixture, data = spec.mixture, spec.data
    train = tokenized["train"]
    tokens = row_tokens(train, data.format)
    recorder = MixtureRecorder(dict(zip(train["id"], tokens)), run_dir)
    if not mixture.drawn:
        return MixingRun(recorder, info={"drawn": False, "unit": mixture.unit})

    base_sampler = datamodule.sampler
    rows, keys = np.asarray(base_sampler.rows), np.asarray(base_sampler.scores)
    sources = np.asarray(train["source"])
    domains = sorted(set(sources[rows].tolist()))
    index = {d: i for i, d in enumerate(domains)}
    row_domains = np.array([index.get(s, -1) for s in sources])
    n = np.array([int((row_domains[rows] == i).sum()) for i in range(len(domains))], dtype=np.float64)
    tok = np.array([float(np.asarray(tokens)[rows][row_domains[rows] == i].sum()) for i in range(len(domains))])
    sizes = dict(zip(domains, (tok if mixture.unit == "tokens" else n).tolist()))
    mixture.check_domains(domains)
    factors = np.array([float(data.domain_weights().get(d, 1.0)) for d in domains])
    trainer = spec.trainer
    total_blocks = max(1, trainer.max_steps * trainer.accumulate_grad_batches)

    def base(block: int) -> np.ndarray:
        w = np.array([mixture.weights_at(min(block / total_blocks, 1.0 - 1e-12), sizes).get(d, 0.0) for d in domains]) * factors
        if w.sum() <= 0:
            raise UserError("mixture", mixture.name, f"gives every domain weight 0 at {block / total_blocks:.0%} of training")
        return w / w.sum()

    to_examples = n / np.maximum(tok, 1.0) if mixture.unit == "tokens" else np.ones(len(domains))
    cap_epochs = np.array([mixture.cap(d) for d in domains])
    caps = None if np.isinf(cap_epochs).all() else np.floor(np.minimum(cap_epochs * n, np.iinfo(np.int64).max // 2)).astype(np.int64)
    sampler = DomainSampler(ordering=base_sampler.ordering, rows=rows, scores=keys, row_domains=row_domains, domains=domains,
                            base_weights=base, batch_size=data.batch_size, seed=mixture.seed, caps=caps, to_examples=to_examples,
                            rank=getattr(base_sampler, "rank", 0), world=getattr(base_sampler, "world", 1))
    online = reweighting = weights_recorder = None
    if getattr(mixture, "reweights_loss", False):  # the batches keep α_ref; the weights act on the loss
        _check_caps(mixture, sampler, domains, n, total_blocks)
        reweighting, weights_recorder = mixture.reweighting(domains, base(0), spec.objective, tokenizer, run_dir)
    elif not hasattr(mixture, "mixer"):
        _check_caps(mixture, sampler, domains, n, total_blocks)
    else:
        online = _online(spec, mixture, examples, tokenized, domains, base(0), datamodule.pad_id, run_dir, cache_dir)
    datamodule.sampler = sampler
    info = {"drawn": True, "unit": mixture.unit, "domains": domains, "initial_weights": dict(zip(domains, base(0).tolist()))}
    return MixingRun(recorder, online, sampler, info, reweighting, weights_recorder)


def _check_caps(mixture, sampler: DomainSampler, domains: list[str], n: np.ndarray, total_blocks: int) -> None:
    """A fixed schedule's expected draws per domain over the run must fit each domain's cap."""
    expected = np.zeros(len(domains))
    for b in range(total_blocks):
        p = sampler.weights_of(b) * sampler.to_examples
        expected += sampler.block * p / p.sum()
    for i, d in enumerate(domains):
        epochs = expected[i] / n[i]
        if epochs > mixture.cap(d) * (1 + 1e-9) and expected[i] >= 1:
            field_ = f"mixture.max_epochs.{d}" if d in mixture.max_epochs else "mixture.max_repetition"
            raise UserError(field_, mixture.cap(d), f"domain {d!r} would be drawn {expected[i]:.0f} times over the run = {epochs:.2f} epochs of its "
                            f"{int(n[i])} examples, {epochs / mixture.cap(d):.2f}x its cap; lower its weight or the steps, or raise the cap")


def _online(spec, mixture, examples, tokenized, domains, initial, pad_id: int, run_dir: Path, cache_dir: Path) -> OnlineMixing:
    """The mixer the config builds and the gatherers of the signals it declares (``assay.mixing.signals``)."""
    mixer = mixture.mixer(domains, initial)
    ctx = SignalContext(spec, mixture, mixer, examples, tokenized, domains, pad_id, cache_dir)
    return OnlineMixing(mixer, mixture.update_every, mixture.warmup_steps, run_dir, gatherers(ctx))
