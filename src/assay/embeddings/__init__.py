"""Embeddings (registry ``embedder``): one vector per example, for scorers that work in a feature space
(the optimal-transport valuations LAVA and GOT-D, similarity-based selection).

An entry is chosen by name from a selection entry (``selection=lava selection.embedder=minilm``) with
its own fields in ``selection.embedder_options``. Embeddings are cached on disk as ``.npy`` under
``<cache_dir>/embeddings``, keyed by the embedder's config, a fingerprint of the data (ids + texts),
and for model-based embedders a digest of the weights, so a stale file is never reused.

Modules: ``base`` (the embedder base class and the cache key's parts), ``build`` (``build_embedder``:
the embedder a selection names), one module per embedder (``hidden_mean``, ``minilm``, ``column``), and
``clusters`` (k-means over embeddings).
"""

from assay.embeddings.base import EmbedderConfig, data_fingerprint, example_texts, model_digest

__all__ = ["EmbedderConfig", "data_fingerprint", "example_texts", "model_digest"]
