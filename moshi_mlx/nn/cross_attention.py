"""Cross-attention from the LM's steps to a fixed conditioning sequence (TTS speaker voices).

Reproduces the cross-attention of PyTorch moshi's `StreamingTransformerLayer` (`cross_attention=
True`): after self-attention, `x += ls_cross(attn(norm_cross(x), src))` where `norm_cross` is
always a LayerNorm (eps 1e-5, weight and bias) whatever the layer's norm, and `attn` is
multi-head attention without mask or positions (the source carries its own sinusoidal position
embedding, see `conditioners.py`). Its `in_proj` [3D, D] is fused like self-attention's: rows
[q | k | v], q from the layer input, k and v from the source.

The source does not change during generation, so its keys and values are computed once per
layer (`CrossAttention.kv`, `Transformer.cross_kv`) and passed in at every step: explicit state,
as for the self-attention caches. Parameter names follow Kyutai's MLX checkpoints:
`layers.{L}.cross_attention.{in_proj, out_proj}.weight`, `layers.{L}.norm_cross.{weight, bias}`,
`layers.{L}.layer_scale_cross.scale` (only with layer scales).
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from .linear import Linear

CrossKV = tuple[mx.array, mx.array]  # keys, values [B, H, S, head_dim]


class CrossAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.in_proj = Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = Linear(d_model, d_model, bias=False)

    def _project(self, x: mx.array, rows: slice, dequantize: bool = False) -> mx.array:
        """x @ in_proj[rows].T for a float or quantized in_proj (only the rows asked for)."""
        p = self.in_proj
        if "scales" not in p:
            return x @ p.weight[rows].T.astype(x.dtype)
        w, scales, biases = p.weight[rows], p.scales[rows], p.biases[rows]
        if dequantize:
            w = mx.dequantize(w, scales, biases, group_size=p.group_size, bits=p.bits)
            return x @ w.T.astype(x.dtype)
        dt = getattr(p, "input_dtype", None) or x.dtype
        out = mx.quantized_matmul(x.astype(dt), w, scales, biases, transpose=True,
                                  group_size=p.group_size, bits=p.bits)
        return out.astype(x.dtype)

    def kv(self, src: mx.array) -> CrossKV:
        """Source [B, S, D] -> its keys and values (the k and v rows of in_proj). A quantized
        in_proj is dequantized for this once-per-stream product of many rows: MLX's CPU
        quantized kernel is far slower there than one float matmul (benchmarks/results/tts.md)."""
        B, S, D = src.shape
        kv = self._project(src, slice(D, None), dequantize=True)
        kv = kv.reshape(B, S, 2, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def __call__(self, x: mx.array, kv: CrossKV) -> mx.array:
        B, T, D = x.shape
        q = self._project(x, slice(None, D))  # the q rows only (k, v come from the source)
        q = q.reshape(B, T, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        k, v = kv
        if k.shape[0] != B:
            k, v = (mx.broadcast_to(a, (B, *a.shape[1:])) for a in (k, v))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(B, T, D))
