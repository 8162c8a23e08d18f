"""The embedder a selection names (``selection.embedder``), built with its own fields
(``selection.embedder_options``) from the registry ``embedder``, which every embedder module of this
package joins by registering."""

from __future__ import annotations

import dataclasses
from typing import Any

from assay.embeddings.base import EmbedderConfig
from assay.errors import UserError, check
from assay.registry import discover, lookup, options


def build_embedder(name: str, options_: dict[str, Any] | None = None) -> EmbedderConfig:
    """The embedder ``name`` with field values from ``options_`` (unknown fields named in the error)."""
    discover("assay.embeddings")  # every embedder module registers its option
    cls = lookup("embedder", name) if name in options("embedder") else None
    if cls is None:
        raise UserError("selection.embedder", name, f"must be one of {sorted(options('embedder'))}")
    opts = dict(options_ or {})
    valid = sorted(f.name for f in dataclasses.fields(cls) if f.name != "name")
    unknown = sorted(set(opts) - set(valid))
    check(not unknown, "selection.embedder_options", unknown, f"unknown for embedder {name}; it has {valid}")
    return cls(**opts)
