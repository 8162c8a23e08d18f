"""FASTTRACK fact tracing (Chen, Kang, Yu & Jia, "FASTTRACK: Reliable Fact Tracing via Clustering and
LLM-Powered Evidence Validation", Findings of EMNLP 2024; arXiv 2404.15157). No code was released; this
follows the algorithm as the paper's abstract and two summaries describe it.

Fact tracing asks which training examples *support* the fact a query asserts (not which are merely
related, nor which moved the model's loss). FASTTRACK answers in two stages:

1. Offline, once per corpus: embed every example with a sentence encoder, cluster by *recursive
   k-means* (split every cluster larger than a threshold, 100 in the paper's example, until none is),
   and label each leaf cluster with keywords.
2. Online, per query: fuzzy-match the query's keywords against the cluster labels to pick candidate
   clusters (pruning most of the corpus), let a validator judge every candidate as supporting the
   query's fact or not, and return the positives: a set, with no cut-off k.

Deviations from the paper (none of its prompts or thresholds could be checked against code):

- Cluster labels are the top TF-IDF terms of each leaf cluster (the cluster's sentences as one
  document, IDF over the leaf clusters), not keywords an LLM wrote.
- The query's keywords are its content words (stop words dropped), not LLM-extracted; matching is
  stdlib difflib's ratio against every label term; the clusters with the most matched keywords are
  kept (``max_clusters``).
- The validator here is SmolLM2-135M-Instruct (the paper's LLM is an unverified GPT-4-class model),
  asked one (evidence, claim) pair per prompt and read off the next-token logits of "Yes" vs "No";
  "batches" are batched forward passes, not several samples in one prompt. The prompt is ours.
- An oracle validator (exact triple match against the ground truth) isolates what retrieval allows:
  its recall is the retrieval ceiling, its precision 1.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from assay.errors import UserError, check

THRESHOLD = 100
"""Largest leaf cluster (the paper's example value)."""
LABEL_TERMS = 10
"""TF-IDF terms per cluster label."""
MATCH_CUTOFF = 0.85
"""difflib ratio at or above which a query keyword matches a label term."""
MAX_CLUSTERS = 3
"""Candidate clusters per query: the best-matching ones."""
TOKEN = re.compile(r"[a-z][a-z]+")


def words(text: str) -> list[str]:
    """Lower-case alphabetic tokens of two letters or more, English stop words dropped."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [w for w in TOKEN.findall(text.lower()) if w not in ENGLISH_STOP_WORDS]


# --------------------------------------------------------------------------- offline index

def recursive_kmeans(x: np.ndarray, threshold: int = THRESHOLD, seed: int = 0, branching: int = 0) -> list[np.ndarray]:
    """Leaf clusters (arrays of row indices) of recursive k-means: a cluster larger than ``threshold``
    is split by k-means into ``branching`` parts (default ceil(size / threshold), at least 2) and each
    part is split again until every leaf holds at most ``threshold`` rows. A split k-means cannot make
    (identical rows) falls back to consecutive chunks, so the bound always holds."""
    from assay.embeddings.clusters import kmeans

    check(threshold >= 1, "--threshold", threshold, "must be a positive cluster size")
    leaves: list[np.ndarray] = []
    stack = [np.arange(len(x))]
    while stack:
        idx = stack.pop()
        if len(idx) <= threshold:
            if len(idx):
                leaves.append(idx)
            continue
        k = branching or max(2, math.ceil(len(idx) / threshold))
        labels = kmeans(x[idx], k, seed).labels_
        parts = [idx[labels == c] for c in range(k)]
        parts = [p for p in parts if len(p)]
        if len(parts) < 2:  # all rows equal: k-means has nothing to split on
            parts = [idx[i : i + threshold] for i in range(0, len(idx), threshold)]
        stack.extend(parts)
    return sorted(leaves, key=lambda p: int(p[0]))


def cluster_labels(texts: Sequence[str], clusters: Sequence[np.ndarray], terms: int = LABEL_TERMS) -> list[list[str]]:
    """The top-``terms`` TF-IDF terms of each cluster: its sentences joined as one document, IDF over
    the clusters, so a term that marks one cluster (a name) outranks one every cluster shares."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [" ".join(words(" ".join(texts[i] for i in c))) for c in clusters]
    vec = TfidfVectorizer(token_pattern=r"[a-z][a-z]+", sublinear_tf=True)
    m = vec.fit_transform(docs).toarray()
    vocab = np.array(vec.get_feature_names_out())
    out = []
    for row in m:
        top = [j for j in np.argsort(-row, kind="stable")[:terms] if row[j] > 0]
        out.append([str(vocab[j]) for j in top])
    return out


@dataclass
class Index:
    clusters: list[np.ndarray]
    labels: list[list[str]]

    @classmethod
    def build(cls, texts: Sequence[str], embeddings: np.ndarray, threshold: int = THRESHOLD, terms: int = LABEL_TERMS,
              seed: int = 0) -> "Index":
        clusters = recursive_kmeans(np.asarray(embeddings, dtype=np.float64), threshold, seed)
        return cls(clusters, cluster_labels(texts, clusters, terms))

    def match(self, query: str, cutoff: float = MATCH_CUTOFF, max_clusters: int = MAX_CLUSTERS) -> list[int]:
        """Candidate clusters for ``query``: those whose label fuzzy-matches at least one of its
        keywords, the ``max_clusters`` with most matched keywords (ties: the earlier cluster)."""
        keys = list(dict.fromkeys(words(query)))
        scores = []
        for c, label in enumerate(self.labels):
            hits = sum(1 for k in keys if difflib.get_close_matches(k, label, n=1, cutoff=cutoff))
            if hits:
                scores.append((-hits, c))
        return [c for _, c in sorted(scores)[:max_clusters]]

    def candidates(self, query: str, cutoff: float = MATCH_CUTOFF, max_clusters: int = MAX_CLUSTERS) -> np.ndarray:
        chosen = self.match(query, cutoff, max_clusters)
        return np.sort(np.concatenate([self.clusters[c] for c in chosen])) if chosen else np.zeros(0, dtype=int)


# --------------------------------------------------------------------------- validators

class Validator(Protocol):
    name: str

    def judge(self, claim: str, fact: tuple, ids: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """A boolean per candidate ``ids`` (rows of ``texts``): does it support ``claim``?"""


@dataclass
class OracleValidator:
    """Exact triple match against the ground truth: precision 1, recall = what retrieval let through."""

    triples: Sequence[Optional[tuple]]
    name: str = "oracle"

    def judge(self, claim: str, fact: tuple, ids: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.triples[i] == tuple(fact) for i in ids], dtype=bool)


@dataclass
class FunctionValidator:
    """A validator from a function ``(claim, sentence) -> bool`` (a rule, a stand-in in tests)."""

    fn: Callable[[str, str], bool]
    name: str = "function"

    def judge(self, claim: str, fact: tuple, ids: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        return np.array([bool(self.fn(claim, texts[i])) for i in ids], dtype=bool)


PROMPT = ("Evidence: {evidence}\nClaim: {claim}\n"
          "Does the evidence state the claim, with the same person and the same detail? Answer Yes or No.")
"""Ours (the paper's prompt is unpublished); SmolLM2's chat template adds its default system message."""
CONTENT_FREE = "N/A"
"""The evidence of the calibration prompt (contextual calibration, Zhao et al. 2021, arXiv 2102.09690)."""


@dataclass
class LLMValidator:
    """SmolLM2-135M-Instruct (the ``smollm2_135m`` preset's GGUF) judging each (evidence, claim) pair
    by the next-token logits after the chat-formatted prompt: Yes when logit("Yes") − logit("No")
    exceeds the same log-odds with a content-free evidence ("N/A") for the same claim, plus
    ``margin`` (``calibrate=False``: exceeds ``margin`` alone). A 135M model's raw log-odds sit below
    zero for every pair, so an uncalibrated threshold of 0 says No to everything."""

    gguf_path: Optional[str] = None
    batch_size: int = 16
    margin: float = 0.0
    calibrate: bool = True
    name: str = "smollm2"
    _model: object = field(default=None, repr=False)
    _tok: object = field(default=None, repr=False)

    def load(self) -> "LLMValidator":
        if self._model is None:
            from assay.models.presets import SmolLM2

            model, tok = SmolLM2(gguf_path=self.gguf_path).load(None)
            tok.padding_side = "left"
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            self._model, self._tok = model.eval(), tok
        return self

    def yes_no_ids(self) -> tuple[int, int]:
        tok = self.load()._tok
        yes, no = tok.encode("Yes", add_special_tokens=False), tok.encode("No", add_special_tokens=False)
        if len(yes) != 1 or len(no) != 1:
            raise UserError("validator", self.name, f"its tokenizer splits Yes/No into {yes}/{no}; need one token each")
        return yes[0], no[0]

    def log_odds(self, claim: str, sentences: Sequence[str]) -> np.ndarray:
        """logit(Yes) − logit(No) at the assistant's first token, each sentence as the evidence for ``claim``."""
        import torch

        self.load()
        yes, no = self.yes_no_ids()
        prompts = [self._tok.apply_chat_template([{"role": "user", "content": PROMPT.format(evidence=s, claim=claim)}],
                                                 tokenize=False, add_generation_prompt=True) for s in sentences]
        out = []
        for start in range(0, len(prompts), self.batch_size):
            batch = self._tok(prompts[start : start + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                logits = self._model(**batch, logits_to_keep=1).logits[:, -1].float()
            out.append((logits[:, yes] - logits[:, no]).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def judge(self, claim: str, fact: tuple, ids: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        scores = self.log_odds(claim, [texts[i] for i in ids] + ([CONTENT_FREE] if self.calibrate else []))
        if self.calibrate:
            return scores[:-1] > scores[-1] + self.margin
        return scores > self.margin


# --------------------------------------------------------------------------- tracing and its scores

@dataclass
class Traced:
    returned: np.ndarray
    candidates: np.ndarray


def trace(index: Index, texts: Sequence[str], claim: str, fact: tuple, validator: Validator, cutoff: float = MATCH_CUTOFF,
          max_clusters: int = MAX_CLUSTERS) -> Traced:
    """FASTTRACK's online stage for one query: candidate clusters, then the validator's positives."""
    cand = index.candidates(claim, cutoff, max_clusters)
    keep = validator.judge(claim, fact, cand, texts) if len(cand) else np.zeros(0, dtype=bool)
    return Traced(cand[np.asarray(keep, dtype=bool)], cand)


def prf(returned: Sequence[int], truth: Sequence[int]) -> tuple[float, float, float]:
    """Precision, recall, F1 of a returned set against the supporting set. An empty return has
    precision 0 (nothing correct was found; the convention that keeps "return nothing" from scoring
    as perfectly precise); an empty truth is refused."""
    r, t = set(int(i) for i in returned), set(int(i) for i in truth)
    if not t:
        raise UserError("truth", [], "a query needs at least one supporting example to score precision and recall")
    tp = len(r & t)
    p = tp / len(r) if r else 0.0
    rec = tp / len(t)
    return p, rec, (2 * p * rec / (p + rec) if p + rec else 0.0)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores (ties: the lower index first)."""
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")[:k]
