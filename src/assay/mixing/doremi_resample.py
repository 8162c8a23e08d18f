"""DoReMi's weight update used to resample batches (``mixture=doremi_resample``; not the authors'
recipe, which is ``mixture=doremi``): the config, the mixer, the update rule (Xie et al. 2023, arXiv
2305.10429, Algorithm 1; sangmichaelxie/doremi, trainer.py ``update_domain_weights`` with
``doremi_optimizer=doremiv1``) and the reference's per-example losses it reads.

    assay-train mixture=doremi_resample mixture.reference=<reference run dir>

The reference model is an earlier assay run (its ``model/`` and ``tokenizer/``, as
``model.init_from`` reads them); DoReMi trains it on the reference weights α_ref first (Xie et al.
2023, §2, step 1). Its loss on every training example of this run is computed once before training,
with the reference's own tokenizer, and cached under ``$ASSAY_CACHE/reference_losses/`` keyed by a
hash of the reference weights, the objective and the examples' text, so every seed of a sweep
against the same reference reuses it and no reference model stays in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Optional

import numpy as np

from assay.cards import MethodCard
from assay.errors import UserError, check
from assay.mixing.base import DomainStats, Mixer, OnlineMixture, normalise
from assay.registry import register

if TYPE_CHECKING:
    import datasets
    import torch


@register("mixture", "doremi_resample")
@dataclass
class DoReMiResampleMixture(OnlineMixture):
    """DoReMi's weight update used to resample batches (not the authors' recipe: see mixture=doremi); excess loss clipped per example.

    Differs from the released recipe (``assay.mixing.doremi``) in three ways, named here so results
    produced with it are not read as DoReMi's: batches are *drawn* by the current weights instead of
    reweighting the loss of batches drawn from the reference weights; the excess loss is clipped per
    example (mean over the example's tokens first) instead of per token; and the reference losses are
    cached per example. A domain whose weight falls near the smoothing floor is then hardly ever
    drawn and its excess loss goes stale, which can swing the weights between near one-hot states.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Xie et al. 2023, DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining (NeurIPS 2023); "
              "this option is not the paper's recipe (that is mixture=doremi)",
        arxiv="2305.10429",
        code="sangmichaelxie/doremi: doremi/trainer.py (update_domain_weights: the same exponentiated-gradient step and smoothing)",
        defaults={
            "eta": "1 (paper: 1): follows",
            "smoothing": "1e-3 (run scripts' reweight_eps): follows",
            "update_every": "10 (the recipe updates every step)",
        },
        deviations=(
            "Batches are drawn by the current weights instead of reweighting the loss of batches drawn from the reference "
            "weights: a domain whose weight nears the smoothing floor is hardly ever drawn and its score goes stale.",
            "The excess loss is clipped per example (the example's mean over tokens first), not per token.",
            "The model trained is the run's own model on unweighted loss (no separate proxy); its average weights are in "
            "mixing.json but no fresh run on them is made.",
            "The reference losses are computed once per example and cached rather than per token on each batch.",
        ),
        checked="tests/unit/mixing/test_mixing_rules.py: the update against hand-derived numbers; "
                "tests/integration/test_mixing_runs.py: a run against a reference run",
        notes="Kept so the wave-two online_mixing numbers (produced with it under the name doremi) stay reproducible.",
    )

    name: str = "doremi_resample"
    reference: Optional[str] = None
    """The reference run's directory (trained on the reference weights, e.g. ``mixture=single``);
    its per-example losses on this run's training examples are computed once and cached."""
    eta: float = 1.0
    """Step size η of the exponentiated-gradient update (the paper's and the run scripts' 1)."""
    smoothing: float = 1e-3
    """c in α ← (1 − c)·α + c/k (run scripts ``--reweight_eps 1e-3``; the argument default is 1e-4)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.reference is not None and str(self.reference) != "", "mixture.reference", self.reference, "DoReMi needs a reference run directory (train one first, e.g. with mixture=single)")
        check(self.eta > 0 and math.isfinite(self.eta), "mixture.eta", self.eta, "must be a finite number > 0")
        check(0.0 <= self.smoothing <= 1.0, "mixture.smoothing", self.smoothing, "must be in [0, 1]")

    def mixer(self, domains, initial):
        return DoReMiMixer(domains, initial, self.eta, self.smoothing)

    def reference_losses(self, ctx) -> dict[str, float]:
        """The ``excess_loss`` signal's reference: the reference run's loss on every training example, cached."""
        if ctx.spec.objective.needs_reference:
            raise UserError("mixture", self.name, f"DoReMi's reference losses do not combine with objective={ctx.spec.objective.name}, which reads reference log-probs itself")
        run = check_reference_run(self.reference, ctx.domains)
        return reference_losses(run, ctx.examples.splits["train"], ctx.spec.objective, ctx.spec.data, ctx.cache_dir)


class DoReMiMixer(Mixer):
    signals = ("train_loss", "excess_loss")

    def __init__(self, domains, initial, eta: float, smoothing: float):
        super().__init__(domains, initial)
        self.eta, self.smoothing = eta, smoothing
        self.state = DoReMiState(self.weights.copy())

    def update(self, stats: DomainStats) -> dict[str, np.ndarray]:
        excess = np.nan_to_num(stats["excess_loss"], nan=0.0)
        self.weights = self.state.update(excess, stats.present, self.eta, self.smoothing)
        return {"weight": self.weights, "excess_loss": self.state.scores, "average_weight": self.state.average}

    def state_dict(self) -> dict:
        s = self.state
        return {"weights": s.weights.tolist(), "scores": s.scores.tolist(), "average": s.average.tolist(), "updates": s.updates}

    def load_state_dict(self, state: dict) -> None:
        self.state = DoReMiState(np.asarray(state["weights"]), np.asarray(state["scores"]), np.asarray(state["average"]), int(state["updates"]))
        self.weights = self.state.weights

    def outputs(self) -> dict[str, dict[str, float]]:
        avg = self.state.average if self.state.updates else self.weights
        return {**super().outputs(), "average_weights": dict(zip(self.domains, avg.tolist()))}


def doremi_step(weights: np.ndarray, scores: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    """One exponentiated-gradient step of the domain weights α on the per-domain excess losses λ:

        α' = softmax(log α + η·λ);   α ← (1 − c)·α' + c/k

    (Algorithm 1, step 2; the released code computes the same in log space and smooths after the
    softmax). ``scores`` are λ_i = mean over domain i's examples of max(ℓ_proxy − ℓ_ref, 0)."""
    logits = np.log(np.asarray(weights, dtype=np.float64)) + eta * np.asarray(scores, dtype=np.float64)
    logits -= logits.max()
    new = np.exp(logits)
    new /= new.sum()
    return (1.0 - smoothing) * new + smoothing / len(new)


@dataclass
class DoReMiState:
    """DoReMi's running state: the current weights, the last excess loss of every domain (a domain
    absent from the batches since the last update keeps its previous score, as in the released
    code), and the running average of the weights over updates (the recipe's output)."""

    weights: np.ndarray
    scores: np.ndarray = None  # type: ignore[assignment]
    average: np.ndarray = None  # type: ignore[assignment]
    updates: int = 0

    def __post_init__(self) -> None:
        self.weights = normalise(self.weights)
        if self.scores is None:
            self.scores = np.zeros_like(self.weights)
        if self.average is None:
            self.average = np.zeros_like(self.weights)

    def update(self, excess: np.ndarray, present: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
        """``excess[i]``: mean clipped excess loss of domain i since the last update (ignored where
        ``present[i]`` is false)."""
        self.scores = np.where(present, excess, self.scores)
        self.weights = doremi_step(self.weights, self.scores, eta, smoothing)
        self.updates += 1
        self.average = self.average + (self.weights - self.average) / self.updates
        return self.weights


def check_reference_run(path: str, domains: list[str]) -> Path:
    """The reference run must be a finished run that reported a loss per domain, on these domains."""
    from assay.models.build import has_final_model

    run = Path(path).expanduser()
    field = "mixture.reference"
    if not has_final_model(run):
        raise UserError(field, path, "must be a finished assay run directory (with model/ or adapter/, and tokenizer/); train the reference first")
    summary_file = run / "summary.json"
    if not summary_file.is_file():
        raise UserError(field, path, "has no summary.json (the reference run did not finish)")
    summary = json.loads(summary_file.read_text())
    metrics = summary.get("metrics", {})
    theirs = sorted((summary.get("data", {}) or {}).get("source_counts", {}) or {})
    per_domain = {k.rsplit("/", 1)[1] for k in metrics if k.startswith(("val/loss/", "test/loss/"))}
    if not per_domain:
        raise UserError(field, path, "reports no per-domain losses (val/loss/<domain>); rerun it with eval.per_source_metrics including loss")
    if theirs and sorted(theirs) != sorted(domains):
        raise UserError(field, path, f"was trained on domains {theirs}, this run has {sorted(domains)}; DoReMi needs a reference on the same domains")
    missing = sorted(set(domains) - per_domain)
    if missing:
        raise UserError(field, path, f"reports no loss for domain(s) {missing} (it has {sorted(per_domain)})")
    return run


def _digest(model: torch.nn.Module, objective, texts: list[str]) -> str:
    from assay.objectives.reference import weights_digest

    h = hashlib.sha256(weights_digest(model).encode())
    h.update(repr(objective).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def reference_losses(run: Path, train: datasets.Dataset, objective, data, cache_dir: Path, device: str = "cpu") -> dict[str, float]:
    """Per-example loss of the reference model on ``train`` (raw examples), keyed by id."""
    import torch

    with torch.no_grad():
        return _reference_losses(run, train, objective, data, cache_dir, device)


def _reference_losses(run: Path, train: datasets.Dataset, objective, data, cache_dir: Path, device: str) -> dict[str, float]:
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer

    from assay.data.collate import Collator, tokenize_split
    from assay.data.datamodule import Rows
    from assay.models.build import load_run_model

    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_run_model("mixture.reference", str(run), run)[0].to(device).eval()
    columns = data.text_columns
    texts = ["\x1f".join(str(r[c]) for c in ("id", *columns)) for r in train.select_columns(["id", *columns])]
    cache = Path(cache_dir) / "reference_losses" / f"{_digest(model, objective, texts)}.parquet"
    if cache.is_file():
        table = pd.read_parquet(cache)
        return dict(zip(table["id"].astype(str), table["loss"].astype(float)))
    tokenized = tokenize_split(train, tokenizer, data.format, data.separator, data.max_length)
    tokenized = tokenized.add_column("_row", list(range(len(tokenized))))
    loader = DataLoader(Rows(tokenized), batch_size=data.eval_batch_size, collate_fn=Collator(tokenizer.pad_token_id, data.format, with_generation=False, **objective.collation))
    ids, losses = [], []
    for batch in loader:
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        out = objective.compute(model, batch, training=False)
        ids.extend(batch["ids"])
        losses.extend(out.loss.float().cpu().tolist())
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    pd.DataFrame({"id": ids, "loss": np.asarray(losses, dtype=np.float64)}).to_parquet(tmp, index=False)
    tmp.rename(cache)
    return dict(zip(ids, losses))
