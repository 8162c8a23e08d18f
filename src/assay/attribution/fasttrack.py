"""Fact tracing on a corpus with known supporting examples: FASTTRACK (:mod:`assay.tracing.fasttrack`;
arXiv 2404.15157) against top-k baselines at matched k, scored by precision, recall and F1 of the
returned set against the sentences that state the query fact (:mod:`assay.tracing.facts`).

Rows (``method``):

- ``fasttrack_<validator>``: FASTTRACK with the SmolLM2-135M-Instruct validator (``smollm2``) or the
  oracle validator (``oracle``: exact triple match; its recall is the retrieval ceiling);
- ``embed``: cosine similarity of MiniLM sentence embeddings (the same vectors FASTTRACK clusters), top-k;
- ``bm25``: Okapi BM25 (``rank_bm25``, k1 = 1.5, b = 0.75) over the same content words, top-k;
- ``tracin``: TracIn with one checkpoint, ⟨∇ℓ(query), ∇ℓ(sentence)⟩ over the last decoder layer of a
  two-layer Llama trained for a few epochs on the corpus (word-level tokens), top-k.

Matched k: by default k = the query's number of supporting sentences (``--k truth``, the most
favourable k a ranked baseline can get; its precision, recall and F1 are then equal); ``--k fasttrack``
takes the size of the set the first FASTTRACK row returned; an integer fixes k.

Seconds per query are online: FASTTRACK's matching and validation (the validator's load excluded);
the query's embedding and similarities; BM25's scoring; TracIn's query gradient and products. The
offline cost (embedding the corpus, clustering and labelling; TracIn's training and per-sentence
gradients) is per corpus, in ``offline_s``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from assay.errors import UserError, check
from assay.tracing.facts import FactCorpus
from assay.tracing.fasttrack import (LABEL_TERMS, MATCH_CUTOFF, MAX_CLUSTERS, THRESHOLD, Index,
                                     prf, top_k, trace, words)

BASELINES = ("embed", "bm25", "tracin")


@dataclass
class Settings:
    threshold: int = THRESHOLD
    terms: int = LABEL_TERMS
    cutoff: float = MATCH_CUTOFF
    max_clusters: int = MAX_CLUSTERS
    k: str = "truth"
    embedder: str = "minilm"
    minilm_path: Optional[str] = None
    tracin_epochs: int = 3


def minilm_vectors(texts: Sequence[str], path: Optional[str]) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 embeddings (assay's ``minilm`` embedder), one row per text."""
    import datasets

    from assay.embeddings.minilm import MiniLM

    emb = MiniLM(path=path, cache=False)
    try:
        emb.model_dir()
    except UserError as e:
        raise UserError("--minilm-path", e.value, "no all-MiniLM-L6-v2 weights there; run `assay-fetch minilm` or pass --minilm-path") from None
    return emb.embed(datasets.Dataset.from_dict({"completion": list(texts)}))


def tfidf_vectors(texts: Sequence[str]) -> np.ndarray:
    """Unit-norm TF-IDF vectors over the content words (the note's weight-free alternative)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer=words)
    return vec.fit_transform(texts).toarray().astype(np.float32)


def embed_all(texts: Sequence[str], queries: Sequence[str], s: Settings) -> tuple[np.ndarray, np.ndarray, float]:
    """(corpus vectors, query vectors, seconds per text): embedded in one pass, so the encoder loads once."""
    t0 = time.perf_counter()
    vectors = minilm_vectors([*texts, *queries], s.minilm_path) if s.embedder == "minilm" else tfidf_vectors([*texts, *queries])
    per_text = (time.perf_counter() - t0) / (len(texts) + len(queries))
    return vectors[: len(texts)], vectors[len(texts) :], per_text


def tracin_setup(texts: Sequence[str], queries: Sequence[str], epochs: int, seed: int):
    """(train gradient features, a function query index -> features): a word-level two-layer Llama
    trained on the corpus, features over its last decoder layer (``assay.models.grads``)."""
    import datasets

    from assay.attribution.lds import TinyTraining, WordTokens
    from assay.models.grads import grad_param_names, gradient_features

    norm = lambda t: " ".join(__import__("re").findall(r"[a-z]+", t.lower()))
    tok = WordTokens([norm(t) for t in [*texts, *queries]])
    table = lambda ts: datasets.Dataset.from_dict({"prompt_ids": [[tok.bos_token_id] for _ in ts],
                                                   "completion_ids": [tok.encode(norm(t)) + [tok.eos_token_id] for t in ts]})
    train, qs = table(texts), table(queries)
    training = TinyTraining(epochs=epochs, batch_size=16, seed=seed)
    model = training.train(train, len(tok))
    names = grad_param_names(model)
    g_train = gradient_features(model, train, 0, names, 32).double()
    return g_train, lambda i: gradient_features(model, qs.select([i]), 0, names, 1).double()


def bm25_index(texts: Sequence[str]):
    try:
        from rank_bm25 import BM25Okapi
    except ImportError:
        raise UserError("--methods", "bm25", "needs the rank-bm25 package (pip install rank-bm25)") from None
    return BM25Okapi([words(t) or ["_"] for t in texts], k1=1.5, b=0.75)


def choose_k(s: Settings, truth: set, reference: Optional[int], n: int) -> int:
    if s.k == "truth":
        return len(truth)
    if s.k == "fasttrack":
        check(reference is not None, "--k", s.k, "needs a FASTTRACK validator among --validators")
        return int(reference)
    return int(s.k)


def evaluate_corpus(corpus: FactCorpus, validators: Sequence, baselines: Sequence[str], s: Settings, seed: int = 0) -> list[dict]:
    """Per-query rows for every method on one corpus."""
    from assay.run.progress import track

    check(len(corpus.facts) >= 1, "--facts", 0, "need at least one planted fact to trace")
    if s.k not in ("truth", "fasttrack"):
        check(str(s.k).isdigit() and 1 <= int(s.k) <= len(corpus), "--k", s.k,
              f"must be 'truth', 'fasttrack' or an integer from 1 to the corpus size ({len(corpus)})")
    queries = [f.query() for f in corpus.facts]
    texts = corpus.texts
    t0 = time.perf_counter()
    vectors, qvectors, per_text = embed_all(texts, queries, s)
    index = Index.build(texts, vectors, s.threshold, s.terms, seed)
    offline = {"fasttrack": time.perf_counter() - t0, "embed": per_text * len(texts)}
    scorers: dict[str, Callable[[int], np.ndarray]] = {}
    if "embed" in baselines:
        scorers["embed"] = lambda q: vectors @ qvectors[q]
    if "bm25" in baselines:
        t0 = time.perf_counter()
        bm25 = bm25_index(texts)
        offline["bm25"] = time.perf_counter() - t0
        scorers["bm25"] = lambda q: bm25.get_scores(words(queries[q]))
    if "tracin" in baselines:
        t0 = time.perf_counter()
        g_train, g_query = tracin_setup(texts, queries, s.tracin_epochs, seed)
        offline["tracin"] = time.perf_counter() - t0
        scorers["tracin"] = lambda q: (g_train @ g_query(q)[0]).numpy()
    extra = {"embed": per_text}  # the query's own embedding, its share of the one pass
    rows = []
    for q, fact in enumerate(track(corpus.facts, "tracing queries", unit="query")):
        truth = corpus.truth(fact)
        base = {"seed": seed, "query": q, "subject": fact.subject, "relation": fact.relation, "truth": len(truth)}
        reference = None
        for v in validators:
            t0 = time.perf_counter()
            got = trace(index, texts, queries[q], fact.triple, v, s.cutoff, s.max_clusters)
            seconds = time.perf_counter() - t0
            reference = len(got.returned) if reference is None else reference
            p, r, f1 = prf(got.returned, truth)
            rows.append({**base, "method": f"fasttrack_{v.name}", "k": "", "returned": len(got.returned), "candidates": len(got.candidates),
                         "candidate_recall": len(set(got.candidates.tolist()) & truth) / len(truth), "precision": p, "recall": r, "f1": f1,
                         "seconds": seconds, "offline_s": offline["fasttrack"]})
        for name, score in scorers.items():
            k = choose_k(s, truth, reference, len(texts))
            t0 = time.perf_counter()
            got = top_k(score(q), k) if k else np.zeros(0, dtype=int)
            seconds = time.perf_counter() - t0 + extra.get(name, 0.0)
            p, r, f1 = prf(got, truth)
            rows.append({**base, "method": name, "k": k, "returned": len(got), "candidates": "", "candidate_recall": "",
                         "precision": p, "recall": r, "f1": f1, "seconds": seconds, "offline_s": offline[name]})
    return rows

