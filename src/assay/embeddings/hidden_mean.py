"""Embedder ``hidden_mean``: pooled last hidden states of the run's own model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.data.text import response_column
from assay.embeddings.base import EmbedderConfig, batch_starts, example_texts
from assay.errors import UserError, check
from assay.lazy import datasets
from assay.registry import register


@register("embedder", "hidden_mean")
@dataclass
class HiddenMean(EmbedderConfig):
    """Mean-pooled last hidden states of the run's own model (RDS+ uses the position-weighted variant)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Ivison et al. 2025, Large-Scale Data Selection for Instruction Tuning (RDS+), its pooling",
        arxiv="2503.01807",
        code="hamishivi/automated-instruction-selection: minimal_multitask/compute_influence_cosinesim.py (--pooling "
             "weighted_mean), as the research note reads it; not re-read",
        defaults={"weighting": "mean (RDS+: position-weighted): differs: the plain mean is the neutral default; "
                                "weighting=position follows RDS+"},
        deviations=("Embeds with the run's own model, whatever it is, rather than RDS+'s base model.",),
        checked="tests/unit/ot/test_ot.py: pools the last hidden state; tests/unit/models/test_passes.py: token weights, "
                "pooling independent of the batch",
    )

    name: str = "hidden_mean"
    weighting: str = "mean"
    """``mean``: plain average over tokens; ``position``: token t (1-based) weighted by t, as in RDS+
    (Ivison et al. 2025, arXiv 2503.01807), so later tokens, which have read more context, count more."""
    response_only: bool = False
    """Pool over the response tokens only (default: prompt and response)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        from assay.models.passes import WEIGHTINGS

        check(self.weighting in WEIGHTINGS, "selection.embedder_options.weighting", self.weighting, "must be 'mean' or 'position'")

    @property
    def needs_model(self) -> bool:
        return True

    def cache_key(self, ds: datasets.Dataset, model: Any) -> str:
        # The token ids, not only the texts: a tokenizer trained on other data gives other inputs.
        h = hashlib.sha256(super().cache_key(ds, model).encode())
        for col in ("prompt_ids", f"{response_column(ds)}_ids"):
            if col in ds.column_names:
                h.update(json.dumps([list(v) for v in ds[col]]).encode())
        return h.hexdigest()[:20]

    def compute(self, ds: datasets.Dataset, model: Any, tokenizer: Any) -> np.ndarray:
        resp = f"{response_column(ds)}_ids"
        if resp not in ds.column_names or "prompt_ids" not in ds.column_names:
            if tokenizer is None:
                raise UserError("selection.embedder", self.name, "needs tokenized data (prompt_ids) or the run's tokenizer")
            texts = example_texts(ds)
            prompts = [[] for _ in texts]
            responses = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
        else:
            prompts, responses = list(ds["prompt_ids"]), list(ds[resp])
        from assay.models.passes import pad_rows, pooled_hidden_states

        pad = getattr(tokenizer, "pad_token_id", None) or 0
        batches = (
            pad_rows(prompts[start : start + self.batch_size], responses[start : start + self.batch_size], pad)
            for start in batch_starts(len(responses), self.batch_size, f"embedding ({self.name})")
        )
        return pooled_hidden_states(model, batches, self.weighting, self.response_only)
