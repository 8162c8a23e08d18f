"""Embedder ``minilm``: all-MiniLM-L6-v2 sentence embeddings, a fixed text encoder independent of the run's model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from assay.cards import MethodCard
from assay.embeddings.base import EmbedderConfig, batch_starts, example_texts
from assay.errors import UserError, check
from assay.lazy import datasets, torch
from assay.registry import register

MINILM_DIR = "all-MiniLM-L6-v2"


@register("embedder", "minilm")
@dataclass
class MiniLM(EmbedderConfig):
    """all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooling, unit norm), offline from ``assay-fetch minilm``."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Reimers & Gurevych 2019, Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks (the sentence-transformers "
              "model all-MiniLM-L6-v2)",
        arxiv="1908.10084",
        code="sentence-transformers/all-MiniLM-L6-v2 (Hugging Face model repository): mean pooling and normalisation; the "
             "outputs were not compared with sentence-transformers' own encode()",
        defaults={
            "max_length": "256 (the model's max_seq_length): follows",
            "normalize": "true (the model's Normalize module): follows",
        },
        deviations=("Mean pooling over the attention mask and L2 normalisation are re-implemented with transformers.",),
        checked="tests/unit/ot/test_ot.py: 384-d unit vectors that put paraphrases close (skipped until assay-fetch minilm), a "
                "missing model directory is one line",
        notes="A fixed text encoder, independent of the run's model: the default embedder of LAVA and GOT-D.",
    )

    name: str = "minilm"
    path: Optional[str] = None
    """Model directory; default ``$ASSAY_CACHE/models/all-MiniLM-L6-v2`` (put there by ``assay-fetch minilm``)."""
    max_length: int = 256
    """Tokens per text; the model was trained with 256 word pieces (sentence-transformers' max_seq_length)."""
    normalize: bool = True
    """Unit-normalise, as sentence-transformers does for this model (its cosine space)."""
    response_only: bool = False
    """Embed the response alone (default: prompt and response)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_length > 0, "selection.embedder_options.max_length", self.max_length, "must be a positive integer")

    def model_dir(self) -> Path:
        from assay.models.build import model_cache_dir

        path = Path(self.path).expanduser() if self.path else model_cache_dir() / MINILM_DIR
        if not (path / "config.json").is_file():
            raise UserError("selection.embedder_options.path", str(path), "no all-MiniLM-L6-v2 model there; run `assay-fetch minilm` or set the path")
        return path

    def cache_key(self, ds: datasets.Dataset, model: Any) -> str:
        return hashlib.sha256((super().cache_key(ds, model) + str(self.response_only)).encode()).hexdigest()[:20]

    def compute(self, ds: datasets.Dataset, model: Any, tokenizer: Any) -> np.ndarray:
        from transformers import AutoModel, AutoTokenizer

        path = self.model_dir()
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        encoder = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        encoder.to(device)
        texts = example_texts(ds, self.response_only)
        out = []
        for start in batch_starts(len(texts), self.batch_size, "embedding (minilm)"):
            batch = tok(texts[start : start + self.batch_size], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(device)
            with torch.no_grad():
                hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            if self.normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)
