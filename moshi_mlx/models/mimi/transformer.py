"""Mimi's encoder/decoder transformer: the shared `nn.transformer.Transformer` with a window cache.

Reproduces `moshi.modules.transformer.ProjectedTransformer` with Mimi's `_transformer_kwargs`
(d_model 512 = input = output, so no projections; LayerNorm, plain GELU MLP, layer scale, RoPE,
causal, context 250 steps at 25 Hz). Names: `encoder_transformer.transformer.layers.{L}...`.

Streaming cache. The attention rule is PyTorch's full-sequence rule: the query at position t sees keys
t_k with 0 <= t - t_k < context, and inside one chunk (two 25 Hz positions per 80 ms frame) it is
causal too (Kyutai's MLX Mimi omits that mask). `WindowKVCache` keeps the last `context - 1` keys and
values in temporal order; a chunk of T new positions attends over `context - 1 + T` keys, so every
query sees its whole window whatever the chunk size, and streaming equals one full pass (PyTorch's own
streaming ring of `context` entries drops one key of the first query of a chunk once past the context).
Memory is flat for any stream length. The cache is rebuilt from plain arrays on each call
(`{"keys": [...], "values": [...], "offset": scalar}`) so whole steps can go through `mx.compile`.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ...config import MimiConfig
from ...nn.transformer import Transformer, TransformerConfig

State = dict[str, Any]


class WindowKVCache:
    """Duck-typed cache for `nn.transformer.Attention` (offset, update_and_fetch, make_mask)."""

    def __init__(self, keys: mx.array, values: mx.array, offset: mx.array, context: int):
        self.keys = keys  # [B, H, context - 1, hd], oldest first
        self.values = values
        self.offset = offset  # int32 scalar: absolute position of the chunk's first query
        self.context = context

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        keys = mx.concatenate([self.keys, k], axis=2)
        values = mx.concatenate([self.values, v], axis=2)
        n = self.keys.shape[2]
        self.keys = keys[:, :, keys.shape[2] - n:]
        self.values = values[:, :, values.shape[2] - n:]
        return keys, values

    def make_mask(self, T: int, window_size: int | None = None, return_array: bool = False) -> mx.array:
        n = self.keys.shape[2]
        pos_q = self.offset + mx.arange(T, dtype=mx.int32)
        pos_k = self.offset - n + mx.arange(n + T, dtype=mx.int32)
        delta = pos_q[:, None] - pos_k[None, :]
        return (pos_k[None, :] >= 0) & (delta >= 0) & (delta < self.context)


def transformer_config(cfg: MimiConfig) -> TransformerConfig:
    return TransformerConfig(
        d_model=cfg.dimension,
        num_heads=cfg.transformer_num_heads,
        num_layers=cfg.transformer_num_layers,
        dim_feedforward=cfg.transformer_dim_feedforward,
        causal=True,
        context=cfg.transformer_context,
        norm="layer_norm",
        gating="none",
        positional_embedding="rope",
        max_period=cfg.transformer_max_period,
        layer_scale=cfg.transformer_layer_scale,
    )


class ProjectedTransformer(nn.Module):
    """`[B, T, D]` -> `[B, T, D]` with explicit window-cache state (see module docstring)."""

    def __init__(self, cfg: MimiConfig):
        super().__init__()
        self.transformer = Transformer(transformer_config(cfg))
        self._context = cfg.transformer_context
        self._heads = cfg.transformer_num_heads
        self._head_dim = cfg.dimension // cfg.transformer_num_heads

    def init_state(self, batch_size: int) -> State:
        n = len(self.transformer.layers)
        shape = (batch_size, self._heads, self._context - 1, self._head_dim)
        return {
            "keys": [mx.zeros(shape) for _ in range(n)],
            "values": [mx.zeros(shape) for _ in range(n)],
            "offset": mx.array(0, dtype=mx.int32),
        }

    def __call__(self, x: mx.array, state: State) -> tuple[mx.array, State]:
        caches = [
            WindowKVCache(k, v, state["offset"], self._context)
            for k, v in zip(state["keys"], state["values"], strict=True)
        ]
        y = self.transformer(x, caches)
        new_state = {
            "keys": [c.keys for c in caches],
            "values": [c.values for c in caches],
            "offset": state["offset"] + x.shape[1],
        }
        return y, new_state
