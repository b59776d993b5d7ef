"""Generic pre-norm streaming transformer shared by the LM (Helium, depformer) and Mimi.

Reproduces `moshi.modules.transformer.StreamingTransformer` (PyTorch) numerically, with module
names equal to Kyutai's MLX checkpoint keys, so their files load with no renaming:

    layers.{L}.self_attn.in_proj.weight    [3*D, D]  fused rows [q | k | v], no bias by default
    layers.{L}.self_attn.out_proj.weight   [D, D]
    layers.{L}.norm1 / norm2               RMSNorm `weight` [D] or LayerNorm `weight`, `bias` [D]
    layers.{L}.gating.linear_in / linear_out     gated MLP (gating "silu" / "gelu")
    layers.{L}.gating.linear1 / linear2          plain MLP with exact GELU (gating "none", Mimi)
    layers.{L}.layer_scale_1 / layer_scale_2     `scale` [D], only when layer_scale is set
    layers.{L}.cross_attention, norm_cross       only with `cross_attention` (see cross_attention.py)

Layer: `x += ls1(attn(norm1(x)))`, `x += ls2(mlp(norm2(x)))`. Attention scale 1/sqrt(head_dim);
RoPE with interleaved pairs (`traditional=True`) at the absolute position (the cache's offset).
Masks follow PyTorch: query t sees keys with 0 <= t - t_k < context (see `kv_cache.py`).
Layout is [B, T, D] (time before channels); Mimi transposes its [B, C, T] tensors around it.

How to build one (e.g. Mimi's encoder/decoder transformer):

    cfg = TransformerConfig(d_model=512, num_heads=8, num_layers=8, dim_feedforward=2048,
                            causal=True, context=250, norm="layer_norm", gating="none",
                            positional_embedding="rope", max_period=10000, layer_scale=0.01)
    tr = Transformer(cfg)
    y = tr(x)                          # full sequence, x [B, T, 512]
    cache = tr.make_cache()            # streaming: one rotating cache per layer
    y1 = tr(x[:, :2], cache); y2 = tr(x[:, 2:4], cache)   # equals y[:, :4]

PyTorch release keys map as `self_attn.in_proj_weight` -> `self_attn.in_proj.weight`,
`linear1/linear2` -> `gating.linear1/gating.linear2`, RMSNorm `alpha` [1,1,D] -> `weight` [D].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ..config import GATINGS, NORMS, POS_EMBS
from .cross_attention import CrossAttention, CrossKV
from .kv_cache import Cache, attention_mask, make_kv_caches
from .linear import Linear


@dataclass(frozen=True)
class TransformerConfig:
    d_model: int
    num_heads: int
    num_layers: int
    dim_feedforward: int
    causal: bool = True
    context: int | None = None
    norm: str = "rms_norm_f32"
    gating: str = "silu"
    positional_embedding: str = "rope"  # "rope" or "none"
    max_period: float = 10000.0
    layer_scale: float | None = None
    bias_attn: bool = False
    bias_ff: bool = False
    cross_attention: bool = False  # TTS: attend to a conditioning source after self-attention

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads != 0:
            raise ValueError(f"num_heads={self.num_heads} must divide d_model={self.d_model}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.gating not in GATINGS:
            raise ValueError(f"gating must be one of {GATINGS}, got {self.gating!r}")
        if self.positional_embedding not in POS_EMBS:
            raise ValueError(f"positional_embedding must be one of {POS_EMBS}, "
                             f"got {self.positional_embedding!r}")
        if self.context is not None and self.context <= 0:
            raise ValueError(f"context must be > 0 or None, got {self.context}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def gating_hidden(self) -> int:
        """Hidden size of the gated MLP (PyTorch `ActivationGating`: 21/8 D when dim_ff == 4 D)."""
        if self.dim_feedforward == 4 * self.d_model:
            return (21 * self.d_model) // 8
        return (2 * self.dim_feedforward) // 3


class RMSNorm(nn.Module):
    """RMSNorm with `weight` [D]; `f32=True` computes in float32 and casts back (PT "rms_norm_f32")."""

    def __init__(self, dim: int, eps: float, f32: bool):
        super().__init__()
        self.weight = mx.ones((dim,))
        self.eps = eps
        self.f32 = f32

    def __call__(self, x: mx.array) -> mx.array:
        if self.f32 and x.dtype != mx.float32:
            y = mx.fast.rms_norm(x.astype(mx.float32), self.weight.astype(mx.float32), self.eps)
            return y.astype(x.dtype)
        return mx.fast.rms_norm(x, self.weight.astype(x.dtype), self.eps)


class LayerNorm(nn.Module):
    """LayerNorm with `weight`, `bias` [D]; `f32=True` computes in float32 (PT "layer_norm_f32")."""

    def __init__(self, dim: int, eps: float, f32: bool = False):
        super().__init__()
        self.weight = mx.ones((dim,))
        self.bias = mx.zeros((dim,))
        self.eps = eps
        self.f32 = f32

    def __call__(self, x: mx.array) -> mx.array:
        if self.f32 and x.dtype != mx.float32:
            y = mx.fast.layer_norm(
                x.astype(mx.float32), self.weight.astype(mx.float32),
                self.bias.astype(mx.float32), self.eps,
            )
            return y.astype(x.dtype)
        return mx.fast.layer_norm(x, self.weight, self.bias, self.eps)


def make_norm(kind: str, dim: int) -> nn.Module:
    """PyTorch `create_norm_fn`: eps 1e-8 for the f32 variants, 1e-5 otherwise."""
    if kind == "rms_norm_f32":
        return RMSNorm(dim, 1e-8, f32=True)
    if kind == "rms_norm":
        return RMSNorm(dim, 1e-5, f32=False)
    if kind == "layer_norm":
        return LayerNorm(dim, 1e-5)
    if kind == "layer_norm_f32":
        return LayerNorm(dim, 1e-8, f32=True)
    raise ValueError(f"unknown norm {kind!r}")


class LayerScale(nn.Module):
    """Per-channel residual scale (`scale` [D])."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.scale = mx.full((dim,), init)

    def __call__(self, x: mx.array) -> mx.array:
        return x * self.scale


class GatedMLP(nn.Module):
    """`linear_in` -> halves (a, b) -> act(a) * b -> `linear_out` (PT `ActivationGating`)."""

    def __init__(self, dim: int, hidden: int, activation: str, bias: bool = False):
        super().__init__()
        self.linear_in = Linear(dim, 2 * hidden, bias=bias)
        self.linear_out = Linear(hidden, dim, bias=bias)
        self.activation = activation

    def __call__(self, x: mx.array) -> mx.array:
        a, b = mx.split(self.linear_in(x), 2, axis=-1)
        act = nn.silu(a) if self.activation == "silu" else nn.gelu(a)
        return self.linear_out(act * b)


class MLP(nn.Module):
    """`linear1` -> exact (erf) GELU -> `linear2` (PT's non-gated FFN, used by Mimi)."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.linear1 = Linear(dim, hidden, bias=bias)
        self.linear2 = Linear(hidden, dim, bias=bias)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear2(nn.gelu(self.linear1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with fused `in_proj` and optional interleaved RoPE."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d = cfg.d_model
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.scale = 1.0 / math.sqrt(cfg.head_dim)
        self.in_proj = Linear(d, 3 * d, bias=cfg.bias_attn)
        self.out_proj = Linear(d, d, bias=cfg.bias_attn)
        self.rope = (
            nn.RoPE(cfg.head_dim, traditional=True, base=cfg.max_period)
            if cfg.positional_embedding == "rope" else None
        )

    def __call__(
        self, x: mx.array, cache: Cache | None = None, mask: None | str | mx.array = None
    ) -> mx.array:
        B, T, _ = x.shape
        qkv = self.in_proj(x).reshape(B, T, 3, self.num_heads, self.head_dim)
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # [3, B, H, T, hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.rope is not None:
            offset = 0 if cache is None else cache.offset
            q = self.rope(q, offset=offset)
            k = self.rope(k, offset=offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(B, T, -1))


class TransformerLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.norm1 = make_norm(cfg.norm, cfg.d_model)
        self.norm2 = make_norm(cfg.norm, cfg.d_model)
        if cfg.gating == "none":
            self.gating = MLP(cfg.d_model, cfg.dim_feedforward, bias=cfg.bias_ff)
        else:
            self.gating = GatedMLP(cfg.d_model, cfg.gating_hidden, cfg.gating, bias=cfg.bias_ff)
        if cfg.layer_scale is not None:
            self.layer_scale_1 = LayerScale(cfg.d_model, cfg.layer_scale)
            self.layer_scale_2 = LayerScale(cfg.d_model, cfg.layer_scale)
        self.has_layer_scale = cfg.layer_scale is not None
        if cfg.cross_attention:
            self.cross_attention = CrossAttention(cfg.d_model, cfg.num_heads)
            self.norm_cross = LayerNorm(cfg.d_model, 1e-5)  # LayerNorm whatever cfg.norm (PT)
            if cfg.layer_scale is not None:
                self.layer_scale_cross = LayerScale(cfg.d_model, cfg.layer_scale)

    def __call__(
        self, x: mx.array, cache: Cache | None = None, mask: None | str | mx.array = None,
        cross: CrossKV | None = None,
    ) -> mx.array:
        update = self.self_attn(self.norm1(x), cache, mask)
        if self.has_layer_scale:
            update = self.layer_scale_1(update)
        x = x + update
        if "cross_attention" in self:
            if cross is None:
                raise ValueError("this transformer cross-attends: pass the source's keys/values")
            update = self.cross_attention(self.norm_cross(x), cross)
            x = x + (self.layer_scale_cross(update) if self.has_layer_scale else update)
        update = self.gating(self.norm2(x))
        if self.has_layer_scale:
            update = self.layer_scale_2(update)
        return x + update


class Transformer(nn.Module):
    """A stack of `TransformerLayer`s; `cache` is a list (one per layer) from `make_cache()`."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = [TransformerLayer(cfg) for _ in range(cfg.num_layers)]

    def __call__(
        self, x: mx.array, cache: list[Cache] | None = None, cross: list[CrossKV] | None = None
    ) -> mx.array:
        """x [B, T, D] -> [B, T, D]; with a cache, positions continue from the cache's offset.
        `cross`: per-layer keys/values of the cross-attention source (`cross_kv`), if any."""
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} layer caches, got {len(cache)}")
        mask = attention_mask(
            x.shape[1], None if cache is None else cache[0], self.cfg.context, self.cfg.causal
        )
        for i, layer in enumerate(self.layers):
            x = layer(x, None if cache is None else cache[i], mask,
                      None if cross is None else cross[i])
        return x

    def cross_kv(self, src: mx.array) -> list[CrossKV]:
        """Cross-attention source [B, S, D] -> keys/values of every layer, computed once."""
        return [layer.cross_attention.kv(src) for layer in self.layers]

    def make_cache(self) -> list[Cache]:
        """Rotating caches holding exactly `context` entries (growing ones if context is None)."""
        return make_kv_caches(len(self.layers), self.cfg.context)
