"""Embeddings (registry ``embedder``): one vector per example, for scorers that work in a feature space
(the optimal-transport valuations LAVA and GOT-D, similarity-based selection).

An entry is chosen by name from a selection entry (``selection=lava selection.embedder=minilm``) with
its own fields in ``selection.embedder_options``. Embeddings are cached on disk as ``.npy`` under
``<cache_dir>/embeddings``, keyed by the embedder's config, a fingerprint of the data (ids + texts),
and for model-based embedders a digest of the weights, so a stale file is never reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import MISSING

from assay.data.text import response_column
from assay.errors import UserError, check
from assay.lazy import datasets, torch
from assay.run.progress import track


def example_texts(ds: datasets.Dataset, response_only: bool = False) -> list[str]:
    """The text of each example as an embedder reads it: prompt and response, or the response alone."""
    responses = list(ds[response_column(ds)])
    if response_only or "prompt" not in ds.column_names:
        return responses
    return [f"{p} {r}" for p, r in zip(ds["prompt"], responses)]


def data_fingerprint(ds: datasets.Dataset, texts: list[str]) -> str:
    """Hash of the ids and the texts, in order: what the embeddings are a function of."""
    h = hashlib.sha256()
    ids = ds["id"] if "id" in ds.column_names else [str(i) for i in range(len(ds))]
    for i, t in zip(ids, texts):
        h.update(str(i).encode())
        h.update(b"\x00")
        h.update(t.encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]


def model_digest(model: torch.nn.Module) -> str:
    """A cheap digest of the weights (shape, sum and sum of squares of every tensor), so embeddings of
    the run's own model are recomputed whenever its weights differ (another seed, a later stage)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            t = p.detach().double()
            h.update(f"{name}:{tuple(t.shape)}:{t.sum().item():.10e}:{(t * t).sum().item():.10e}".encode())
    return h.hexdigest()[:16]


@dataclass
class EmbedderConfig:
    name: str = MISSING
    batch_size: int = 64
    """Examples per forward pass."""
    cache: bool = True
    """Reuse embeddings stored under ``<cache_dir>/embeddings`` when config, data and weights match."""

    def __post_init__(self) -> None:
        check(self.batch_size > 0, "selection.embedder_options.batch_size", self.batch_size, "must be a positive integer")

    @property
    def needs_model(self) -> bool:
        return False

    @property
    def data_columns(self) -> tuple[str, ...]:
        """Columns of the data this embedder reads (the loader keeps them)."""
        return ()

    def compute(self, ds: datasets.Dataset, model: Any, tokenizer: Any) -> np.ndarray:
        raise UserError("selection.embedder", self.name, "is not a concrete embedder")

    def cache_key(self, ds: datasets.Dataset, model: Any) -> str:
        """Embedder config + data fingerprint (+ weights digest, for model-based embedders)."""
        cfg = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("batch_size", "cache")}
        parts = [json.dumps(cfg, sort_keys=True), data_fingerprint(ds, example_texts(ds))]
        if self.needs_model and model is not None:
            parts.append(model_digest(model))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]

    def embed(self, ds: datasets.Dataset, model: Any = None, tokenizer: Any = None, cache_dir: Optional[Path] = None) -> np.ndarray:
        """(len(ds), dim) float32 embeddings, from the cache when it holds them."""
        if self.needs_model and model is None:
            raise UserError("selection.embedder", self.name, "needs the run's model, which this stage does not provide")
        path = None
        if self.cache and cache_dir is not None:
            path = Path(cache_dir) / "embeddings" / f"{self.name}-{self.cache_key(ds, model)}.npy"
            if path.is_file():
                return np.load(path)
        emb = np.asarray(self.compute(ds, model, tokenizer), dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(ds):
            raise UserError("selection.embedder", self.name, f"must give one vector per example; got shape {emb.shape} for {len(ds)} examples")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".partial.npy")
            np.save(tmp, emb)
            tmp.rename(path)
        return emb


def batch_starts(n: int, size: int, desc: str):
    """Start index of every batch of ``size`` over ``n`` rows, with a progress bar."""
    return track(range(0, n, size), desc, total=(n + size - 1) // size)
