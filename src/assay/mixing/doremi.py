"""DoReMi as its authors ran it (Xie et al. 2023, arXiv 2305.10429; sangmichaelxie/doremi,
``doremi/trainer.py``: ``DoReMiTrainer.training_step`` and ``update_domain_weights``, doremiv1).

The recipe has three stages; ``assay-train experiment=doremi`` runs them as one command:

1. **reference**: a model trained on the reference domain weights α_ref;
2. **proxy** (``mixture=doremi``, this module): a fresh model trained by group DRO. Its batches are
   drawn from α_ref (the weights never change what is sampled); at every optimizer step
       λ_i = mean over domain i's tokens in the step of max(ℓ_θ(token) − ℓ_ref(token), 0)
       α ← (1 − c)·softmax(log α + η·λ) + c/k
   (a domain absent from the step keeps its previous λ), and the proxy's loss is the per-token loss
   reweighted by the *current* α of each token's domain, Σ α_d(t)·ℓ(t) / Σ α_d(t);
3. **main**: a fresh model trained on the *average* of α over the proxy's steps
   (``mixture=weights mixture.weights_from=<proxy run>``).

The proxy writes ``mixing.csv`` (α, λ and the running average at every update) and ``mixing.json``
(``average_weights``: the recipe's output). The earlier assay variant, which resamples batches by
the current weights and clips per example, is ``mixture=doremi_resample``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from assay.cards import MethodCard
from assay.errors import UserError, check
from assay.mixing.base import OnlineMixture
from assay.registry import register


@register("mixture", "doremi")
@dataclass
class DoReMiMixture(OnlineMixture):
    """DoReMi's proxy stage (Xie et al. 2023): group DRO over domains, per-token excess loss over a reference model, weights averaged over training."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Xie et al. 2023, DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining (NeurIPS 2023)",
        arxiv="2305.10429",
        code="sangmichaelxie/doremi: doremi/trainer.py (DoReMiTrainer.training_step, update_domain_weights; doremiv1)",
        defaults={
            "eta": "1 (paper and run scripts: reweight_eta 1): follows",
            "smoothing": "1e-3 (run scripts: reweight_eps 1e-3; the argument default is 1e-4): follows the run scripts",
            "update_every": "1 (the released code updates α at every optimizer step): follows",
            "init": "natural (α_ref: the Pile's default weights in the paper; uniform for GLaM): follows the Pile setting; "
                    "set init=uniform for the GLaM setting",
        },
        deviations=(
            "The reference's per-token losses are computed online by the reference model on the proxy's batch (the released "
            "code does the same inside its model wrapper); the reference must therefore use the proxy's tokenizer (checked).",
            "The three stages share one model size unless a stage's overrides change it (the paper: 280M proxy and reference, "
            "8B main model); at toy scale this is what a 2-core machine affords.",
        ),
        checked="tests/unit/mixing/test_doremi.py: per-token clipping, the loss reweighting and the update against "
                "hand-derived numbers; tests/integration/test_mixing_runs.py: the three stages end to end on skills",
    )

    name: str = "doremi"
    reference: Optional[str] = None
    """The reference run's directory (stage 1, trained on α_ref with the same tokenizer); the proxy
    computes its per-token losses on every batch. ``experiment=doremi`` fills it in."""
    eta: float = 1.0
    """η, the step size of the exponentiated-gradient update of α."""
    smoothing: float = 1e-3
    """c in α ← (1 − c)·α' + c/k."""
    update_every: int = 1
    init: str = "natural"
    """α_ref, the weights the proxy's batches are drawn from (and the reference was trained on):
    ``natural``, ``uniform``, ``temperature`` or ``weights``; it is also α's starting point."""
    reweights_loss: ClassVar[bool] = True
    """The proxy trains on the α-reweighted loss; α never changes what is sampled."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.reference is not None and str(self.reference) != "", "mixture.reference", self.reference,
              "DoReMi's proxy needs the reference run's directory (or run all three stages with experiment=doremi)")
        check(self.eta > 0 and math.isfinite(self.eta), "mixture.eta", self.eta, "must be a finite number > 0")
        check(0.0 <= self.smoothing <= 1.0, "mixture.smoothing", self.smoothing, "must be in [0, 1]")

    def mixer(self, domains, initial):  # the proxy's α lives in GroupDRO, not in an online mixer
        raise TypeError("mixture=doremi reweights the loss; see assay.mixing.doremi.GroupDRO")

    def reweighting(self, domains: list[str], initial: np.ndarray, objective, tokenizer, run_dir: Path):
        """The proxy's loss reweighting (a module the LightningModule owns) and its recorder callback."""
        from assay.mixing.group_dro import DoReMiRecorder, GroupDRO

        if objective.data_format != "sft" or objective.needs_reference:
            raise UserError("mixture", self.name, f"DoReMi's proxy is trained by per-token language-modelling loss; use objective=sft (not {objective.name})")
        reference = load_reference(self.reference, tokenizer, domains)
        dro = GroupDRO(domains, initial, self.eta, self.smoothing, self.update_every, self.warmup_steps, reference)
        return dro, DoReMiRecorder(dro, run_dir)


def load_reference(path: str, tokenizer, domains: list[str]):
    """The reference run's model (eval mode, no gradient), refused when it cannot score the proxy's tokens."""
    from transformers import AutoTokenizer

    from assay.models.build import has_final_model, load_run_model

    run = Path(path).expanduser()
    field = "mixture.reference"
    if not has_final_model(run):
        raise UserError(field, path, "must be a finished assay run directory (with model/ or adapter/, and tokenizer/); train the reference first")
    theirs = AutoTokenizer.from_pretrained(run / "tokenizer")
    if theirs.get_vocab() != tokenizer.get_vocab():
        raise UserError(field, path, "uses another tokenizer than this run; DoReMi compares per-token losses, so the proxy must use the reference's "
                        f"tokenizer (e.g. model.tokenizer={run / 'tokenizer'})")
    summary = run / "summary.json"
    if summary.is_file():
        counts = (json.loads(summary.read_text()).get("data", {}) or {}).get("source_counts", {}) or {}
        if counts and sorted(counts) != sorted(domains):
            raise UserError(field, path, f"was trained on domains {sorted(counts)}, this run has {sorted(domains)}; DoReMi needs a reference on the same domains")
    model, _ = load_run_model(field, path, run)
    model.eval().requires_grad_(False)
    return model
