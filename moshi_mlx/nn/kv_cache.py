"""KV caches for streaming attention, passed in from outside (never module attributes).

We reuse mlx-lm's caches because their semantics are exactly PyTorch moshi's (proven by
`tests/test_nn_transformer.py`):

- `KVCache` (growing): keeps every key; used when the attention context is unbounded.
- `RotatingKVCache(max_size=context)`: holds exactly `context` entries once full, so a session runs
  forever with flat memory. Single-step updates write in place (ring buffer); multi-step chunks
  keep `context - 1 + T` entries in temporal order so that every query of the chunk still sees its
  full window. Its mask (built *before* the update) allows `0 <= t_q - t_k < context`, which is
  PyTorch's `RingKVCache` rule (itself included, `context` keys), not Kyutai MLX's `<= context`.
- `ConcatenateKVCache`: no preallocation; used by the depformer, whose cache is fresh every frame
  and never holds more than dep_q positions.

`attention_mask(T, cache, context, causal)` returns what `mx.fast.scaled_dot_product_attention`
needs for T new queries: None, "causal" (lower-right aligned) or a boolean `[T, T_kv]` array.
Call it once per transformer call, before any layer updates its cache (all layers share offsets).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import ConcatenateKVCache, KVCache, RotatingKVCache

__all__ = [
    "ConcatenateKVCache",
    "KVCache",
    "RotatingKVCache",
    "attention_mask",
    "make_kv_caches",
    "cache_offset",
]

Cache = Any  # one of the classes above (duck-typed: offset, update_and_fetch, make_mask)


def make_kv_caches(num_layers: int, context: int | None) -> list[Cache]:
    """One cache per layer: rotating with exactly `context` entries, or growing if unbounded."""
    if context is None:
        return [KVCache() for _ in range(num_layers)]
    return [RotatingKVCache(max_size=context) for _ in range(num_layers)]


def cache_offset(cache: Cache | None) -> int:
    """Absolute position of the next token (number of tokens seen so far)."""
    return 0 if cache is None else int(cache.offset)


def attention_mask(
    T: int, cache: Cache | None, context: int | None, causal: bool = True
) -> None | str | mx.array:
    """Mask for T new queries at absolute positions offset..offset+T-1 (PyTorch moshi rule).

    A query at t sees keys t_k with 0 <= t - t_k < context (context None: unbounded); non-causal
    attention sees everything.
    """
    if not causal:
        return None
    if cache is None:
        if context is not None and T > context:
            return create_causal_mask(T, 0, window_size=context)
        return "causal" if T > 1 else None
    if isinstance(cache, (KVCache, ConcatenateKVCache)):
        # mlx-lm's growing caches hold every key. Built here: mlx-lm 0.28 (older releases)
        # KVCache.make_mask ignores the window (test_growing_cache_with_context_applies_window).
        offset = int(cache.offset)
        if context is not None and offset + T > context:
            return create_causal_mask(T, offset, window_size=context)
        return "causal" if T > 1 else None
    if isinstance(cache, RotatingKVCache) and context is not None and cache.max_size != context:
        raise ValueError(
            f"rotating cache holds {cache.max_size} entries but the attention context is {context}"
        )
    return cache.make_mask(T, window_size=context, return_array=False)
