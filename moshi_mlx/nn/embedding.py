"""Token embeddings with PyTorch moshi's `zero_token_id` behaviour, quantized or not.

`ScaledEmbedding` (PT `moshi.models.lm_utils.ScaledEmbedding`, parameter `weight` [N, D]) returns
exact zeros for id -1 (ids are clamped to >= 0, looked up, then masked). `nn.quantize` turns it into
`QuantizedScaledEmbedding` (parameters `weight` uint32, `scales`, `biases`, as in mlx-lm and
Kyutai's q4/q8 files), which keeps that masking: Kyutai's MLX `QuantizedEmbedding` loses it.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

ZERO_TOKEN_ID = -1


def _signed(ids: mx.array) -> mx.array:
    """Ids as a signed int (argmax gives uint32, which cannot hold -1)."""
    return ids if ids.dtype in (mx.int32, mx.int64) else ids.astype(mx.int32)


def _mask_zero(ids: mx.array, y: mx.array) -> mx.array:
    return mx.where((ids == ZERO_TOKEN_ID)[..., None], mx.zeros((1,), dtype=y.dtype), y)


class ScaledEmbedding(nn.Embedding):
    """Embedding whose id -1 maps to an exact zero vector."""

    def __call__(self, ids: mx.array) -> mx.array:
        ids = _signed(ids)
        return _mask_zero(ids, self.weight[mx.maximum(ids, 0)])

    def to_quantized(
        self, group_size: int | None = None, bits: int | None = None, mode: str = "affine",
        quantize_input: bool = False,
    ) -> QuantizedScaledEmbedding:
        if quantize_input:
            raise ValueError("quantized inputs are not supported for embeddings")
        return QuantizedScaledEmbedding.from_embedding(self, group_size, bits, mode=mode)


class QuantizedScaledEmbedding(nn.QuantizedEmbedding):
    """Quantized `ScaledEmbedding`: same zero output for id -1."""

    def __call__(self, ids: mx.array) -> mx.array:
        ids = _signed(ids)
        return _mask_zero(ids, super().__call__(mx.maximum(ids, 0)))
