"""Seeded random projections of per-sample gradients that preserve inner products in expectation:
the same seed gives the same map on every call, every step and every shard, so projected features
compare across checkpoints and ranks."""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from typing import Optional

from assay.lazy import torch

PROJECTIONS = ("sjlt", "rademacher")
"""``sjlt``: sparse Johnson–Lindenstrauss (CountSketch), O(D) memory and O(B·D) time;
``rademacher``: the dense ±1/sqrt(k) matrix of TRAK / LESS, O(B·D·k) time."""

RADEMACHER_CACHE_MIB = 512
"""Memory the dense Rademacher matrices may keep between calls (float32 when they fit, else as
int8 signs, else regenerated from the seed on every call)."""

_rademacher_cache: "OrderedDict[tuple, list[torch.Tensor]]" = OrderedDict()


def _rademacher_bits(seed: int, start: int, rows: int, dim: int, device) -> torch.Tensor:
    """Rows ``start:start+rows`` of the seeded matrix as int8 {0, 1}; each block has its own
    generator, so any block is reproducible alone (on every call and every shard)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + start)
    return torch.randint(0, 2, (rows, dim), generator=gen, dtype=torch.int8).to(device)


def _signs(r: torch.Tensor) -> torch.Tensor:
    return r.float().mul_(2).sub_(1) if r.dtype == torch.int8 else r


def _cached_rademacher(d: int, dim: int, seed: int, block: int, device) -> Optional[list[torch.Tensor]]:
    """The matrix's blocks, kept between calls within ``RADEMACHER_CACHE_MIB`` (least recently used
    evicted first); None when it does not fit even as int8."""
    key = (seed, d, dim, block, str(device))
    if key in _rademacher_cache:
        _rademacher_cache.move_to_end(key)
        return _rademacher_cache[key]
    budget = RADEMACHER_CACHE_MIB << 20
    as_float = 4 * d * dim <= budget
    if not as_float and d * dim > budget:
        return None
    blocks = [_rademacher_bits(seed, s, min(block, d - s), dim, device) for s in range(0, d, block)]
    if as_float:
        blocks = [_signs(b) for b in blocks]
    size = sum(b.numel() * b.element_size() for b in blocks)
    while _rademacher_cache and size + sum(b.numel() * b.element_size() for v in _rademacher_cache.values() for b in v) > budget:
        _rademacher_cache.popitem(last=False)
    _rademacher_cache[key] = blocks
    return blocks


def rademacher_project(g: torch.Tensor, dim: int, seed: int, block: int = 4096) -> torch.Tensor:
    """Seeded Rademacher projection to ``dim`` (TRAK / LESS use d = 8192; Achlioptas 2003), scaled
    by 1/sqrt(dim) so inner products are preserved in expectation. The matrix is generated block
    by block of input rows from the seed, so it is the same on every call and every shard."""
    blocks = _cached_rademacher(g.shape[1], dim, seed, block, g.device)
    out = torch.zeros(g.shape[0], dim, dtype=torch.float32, device=g.device)
    for i, start in enumerate(range(0, g.shape[1], block)):
        rows = min(block, g.shape[1] - start)
        r = _signs(blocks[i] if blocks is not None else _rademacher_bits(seed, start, rows, dim, g.device))
        out += g[:, start : start + rows].float() @ r
    return out / math.sqrt(dim)


@functools.lru_cache(maxsize=8)
def _sjlt_hash(d: int, dim: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each input coordinate's output bucket h(i) and sign σ(i), from the seed alone (O(D) memory)."""
    gen = torch.Generator().manual_seed(seed)
    bucket = torch.randint(0, dim, (d,), generator=gen)
    sign = torch.randint(0, 2, (d,), generator=gen).float().mul_(2).sub_(1)
    return bucket.to(device), sign.to(device)


SJLT_CHUNK_BYTES = 4 << 20
"""Size of the signed copy of a block of input coordinates hashed in one step (a small block is
reused from step to step; a fresh multi-MiB temporary per step costs more than the hashing)."""


def sjlt_project(g: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Sparse JL transform with one nonzero per input coordinate (CountSketch; Charikar, Chen and
    Farach-Colton 2002, as a JL map Kane and Nelson 2014, arXiv 1012.1577; the projection GraSS
    uses for per-sample gradients, arXiv 2505.18976): y_j = Σ_{i: h(i)=j} σ(i) g_i. Inner products
    are unbiased, E⟨Sx, Sy⟩ = ⟨x, y⟩, with the same variance as the dense Rademacher map,
    (‖x‖²‖y‖² + ⟨x,y⟩² − 2Σ_i x_i²y_i²) / dim, at O(B·D) time instead of O(B·D·dim)."""
    bucket, sign = _sjlt_hash(g.shape[1], dim, seed, str(g.device))
    out = torch.zeros(g.shape[0], dim, dtype=torch.float32, device=g.device)
    step = max(1024, SJLT_CHUNK_BYTES // (4 * max(1, g.shape[0])))
    for start in range(0, g.shape[1], step):
        end = start + step
        out.index_add_(1, bucket[start:end], g[:, start:end].float() * sign[start:end])
    return out


def project(g: torch.Tensor, dim: int, seed: int, block: int = 4096, kind: str = "rademacher") -> torch.Tensor:
    """[B, dim] random projection of the rows of ``g`` that preserves inner products in
    expectation; the same seed gives the same map on every call and every shard. ``kind`` is one
    of ``PROJECTIONS`` (``block`` only shapes how the Rademacher matrix is generated)."""
    if kind == "sjlt":
        return sjlt_project(g, dim, seed)
    if kind == "rademacher":
        return rademacher_project(g, dim, seed, block)
    raise ValueError(f"projection must be one of {list(PROJECTIONS)}, not {kind!r}")
