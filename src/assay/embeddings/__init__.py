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
from typing import Any, ClassVar, Optional

import numpy as np
from omegaconf import MISSING
from tqdm.auto import tqdm

from assay.cards import MethodCard
from assay.data.text import response_column
from assay.errors import UserError, check
from assay.lazy import datasets, torch
from assay.registry import lookup, options, register


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


def build_embedder(name: str, options_: dict[str, Any] | None = None) -> EmbedderConfig:
    """The embedder ``name`` with field values from ``options_`` (unknown fields named in the error)."""
    cls = lookup("embedder", name) if name in options("embedder") else None
    if cls is None:
        raise UserError("selection.embedder", name, f"must be one of {sorted(options('embedder'))}")
    opts = dict(options_ or {})
    valid = sorted(f.name for f in dataclasses.fields(cls) if f.name != "name")
    unknown = sorted(set(opts) - set(valid))
    check(not unknown, "selection.embedder_options", unknown, f"unknown for embedder {name}; it has {valid}")
    return cls(**opts)


def _batches(n: int, size: int, desc: str):
    return tqdm(range(0, n, size), desc=desc, unit="batch", total=(n + size - 1) // size, leave=False)


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
            for start in _batches(len(responses), self.batch_size, f"embedding ({self.name})")
        )
        return pooled_hidden_states(model, batches, self.weighting, self.response_only)


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
        for start in _batches(len(texts), self.batch_size, "embedding (minilm)"):
            batch = tok(texts[start : start + self.batch_size], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(device)
            with torch.no_grad():
                hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            if self.normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


@register("embedder", "column")
@dataclass
class Column(EmbedderConfig):
    """A precomputed embedding column of the data (a list of floats per example)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="",
        checked="tests/unit/ot/test_ot.py: NaN vectors are refused; the OT entries run on it",
        notes="Precomputed vectors from a column of the data: bring any embedder (e.g. GOT-D's target-tuned distilBERT).",
    )

    name: str = "column"
    column: str = "embedding"
    """Name of the column holding the vectors."""
    cache: bool = False

    @property
    def data_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def compute(self, ds: datasets.Dataset, model: Any, tokenizer: Any) -> np.ndarray:
        if self.column not in ds.column_names:
            raise UserError("selection.embedder_options.column", self.column, f"not a column of the data; columns are {ds.column_names}")
        values = ds[self.column]
        lengths = {len(v) for v in values}
        check(len(lengths) <= 1, "selection.embedder_options.column", self.column, f"vectors must all have one length; found lengths {sorted(lengths)[:5]}")
        return np.asarray(values, dtype=np.float32).reshape(len(values), -1)
