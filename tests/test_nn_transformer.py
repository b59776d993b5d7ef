"""Shared transformer: values against an independent float64 NumPy reference of PyTorch moshi's
rules (interleaved RoPE at absolute positions, mask 0 <= t_q - t_k < context, pre-norm layers),
and streaming with growing / rotating caches equal to the full forward for any chunking."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx.utils import tree_flatten, tree_map

from moshi_mlx.nn.kv_cache import KVCache, RotatingKVCache
from moshi_mlx.nn.transformer import Transformer, TransformerConfig


def _np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32), dtype=np.float64)


def _rope(x: np.ndarray, max_period: float) -> np.ndarray:
    """PyTorch `apply_rope` (interleave=True) on [H, T, D] at positions 0..T-1."""
    H, T, D = x.shape
    freqs = np.exp(np.arange(D // 2) * (-math.log(max_period) * 2 / D))
    ang = np.arange(T)[:, None] * freqs[None]
    cos, sin = np.cos(ang), np.sin(ang)
    xr, xi = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = xr * cos - xi * sin
    out[..., 1::2] = xr * sin + xi * cos
    return out


def _norm(p: dict, x: np.ndarray, kind: str) -> np.ndarray:
    if kind.startswith("rms"):
        eps = 1e-8 if kind == "rms_norm_f32" else 1e-5
        return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + eps) * p["weight"]
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p["weight"] + p["bias"]


def reference_forward(tr: Transformer, x: mx.array) -> np.ndarray:
    """Float64 reference for one batch element-independent full pass, x [B, T, D]."""
    cfg = tr.cfg
    params = tree_map(_np, tr.parameters())
    h = _np(x)
    B, T, D = h.shape
    H, hd = cfg.num_heads, cfg.head_dim
    tq, tk = np.arange(T)[:, None], np.arange(T)[None]
    allowed = np.ones((T, T), bool)
    if cfg.causal:
        allowed = (tq - tk >= 0) & (True if cfg.context is None else (tq - tk < cfg.context))
    for lp in params["layers"]:
        out = np.zeros_like(h)
        for b in range(B):
            y = _norm(lp["norm1"], h[b], cfg.norm)
            qkv = y @ lp["self_attn"]["in_proj"]["weight"].T
            q, k, v = (qkv[:, i * D:(i + 1) * D].reshape(T, H, hd).transpose(1, 0, 2) for i in range(3))
            if cfg.positional_embedding == "rope":
                q, k = _rope(q, cfg.max_period), _rope(k, cfg.max_period)
            s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            s = np.where(allowed, s, -np.inf)
            w = np.exp(s - s.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            a = (w @ v).transpose(1, 0, 2).reshape(T, D) @ lp["self_attn"]["out_proj"]["weight"].T
            if cfg.layer_scale is not None:
                a = a * lp["layer_scale_1"]["scale"]
            out[b] = h[b] + a
        h = out
        y = _norm(lp["norm2"], h, cfg.norm)
        g = lp["gating"]
        if cfg.gating == "none":
            z = y @ g["linear1"]["weight"].T
            erf = np.vectorize(math.erf)
            f = (0.5 * z * (1 + erf(z / math.sqrt(2)))) @ g["linear2"]["weight"].T
        else:
            z = y @ g["linear_in"]["weight"].T
            a_, b_ = np.split(z, 2, axis=-1)
            f = (a_ / (1 + np.exp(-a_)) * b_) @ g["linear_out"]["weight"].T
        if cfg.layer_scale is not None:
            f = f * lp["layer_scale_2"]["scale"]
        h = h + f
    return h


def _randomize(tr: Transformer, seed: int) -> None:
    """Random norms / layer scales too, so their weights are actually exercised."""
    rng = np.random.default_rng(seed)
    new = [(k, mx.array(rng.normal(size=v.shape).astype(np.float32) * (0.3 if v.ndim == 2 else 1.0)))
           for k, v in tree_flatten(tr.parameters())]
    tr.load_weights(new)


LM_LIKE = dict(d_model=32, num_heads=4, num_layers=2, dim_feedforward=80, context=5)


@pytest.mark.parametrize("context,norm", [(None, "rms_norm_f32"), (5, "rms_norm_f32"), (64, "rms_norm"),
                                          (5, "layer_norm")])
def test_full_forward_matches_reference_lm_style(context, norm):
    cfg = TransformerConfig(**{**LM_LIKE, "context": context, "norm": norm})
    tr = Transformer(cfg)
    _randomize(tr, 0)
    x = mx.random.normal((2, 17, 32), key=mx.random.key(1))
    ref = reference_forward(tr, x)
    got = _np(tr(x))
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4)


def test_full_forward_matches_reference_mimi_style():
    cfg = TransformerConfig(d_model=16, num_heads=2, num_layers=2, dim_feedforward=64, context=4,
                            norm="layer_norm", gating="none", layer_scale=0.01)
    tr = Transformer(cfg)
    _randomize(tr, 2)
    x = mx.random.normal((1, 11, 16), key=mx.random.key(3))
    np.testing.assert_allclose(_np(tr(x)), reference_forward(tr, x), rtol=2e-4, atol=2e-4)
    names = {k for k, _ in tree_flatten(tr.parameters())}
    assert "layers.1.gating.linear1.weight" in names and "layers.0.layer_scale_2.scale" in names
    assert "layers.0.norm1.bias" in names


def test_no_rope_and_gating_hidden():
    cfg = TransformerConfig(d_model=16, num_heads=2, num_layers=1, dim_feedforward=64,
                            positional_embedding="none")
    assert cfg.gating_hidden == 42  # 21 * 16 // 8 when dim_ff == 4 * d
    assert TransformerConfig(16, 2, 1, 66).gating_hidden == 44
    tr = Transformer(cfg)
    _randomize(tr, 4)
    x = mx.random.normal((1, 6, 16), key=mx.random.key(5))
    np.testing.assert_allclose(_np(tr(x)), reference_forward(tr, x), rtol=2e-4, atol=2e-4)


def _stream(tr: Transformer, x: mx.array, chunks: list[int], cache: list) -> mx.array:
    outs, t = [], 0
    for c in chunks:
        outs.append(tr(x[:, t:t + c], cache))
        mx.eval(outs[-1])
        t += c
    return mx.concatenate(outs, axis=1)


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(st.integers(1, 7), min_size=1, max_size=30), context=st.integers(1, 6))
def test_rotating_cache_equals_windowed_full_attention(chunks, context):
    """Over many more steps than `context`, any chunking gives the sliding-window full forward."""
    cfg = TransformerConfig(**{**LM_LIKE, "context": context, "num_layers": 1})
    mx.random.seed(7)
    tr = Transformer(cfg)
    T = sum(chunks)
    x = mx.random.normal((2, T, 32), key=mx.random.key(T))
    cache = tr.make_cache()
    assert isinstance(cache[0], RotatingKVCache)
    got = _stream(tr, x, chunks, cache)
    np.testing.assert_allclose(_np(got), _np(tr(x)), rtol=1e-4, atol=1e-4)
    # Memory stays bounded: at most context - 1 + last chunk entries.
    assert cache[0].keys.shape[2] <= max(context - 1 + chunks[-1], min(T, 256))


def test_rotating_cache_long_single_steps_matches_reference():
    context, T = 4, 40
    cfg = TransformerConfig(**{**LM_LIKE, "context": context})
    tr = Transformer(cfg)
    _randomize(tr, 8)
    x = mx.random.normal((1, T, 32), key=mx.random.key(9))
    cache = tr.make_cache()
    got = _stream(tr, x, [1] * T, cache)
    np.testing.assert_allclose(_np(got), reference_forward(tr, x), rtol=2e-4, atol=2e-4)
    assert cache[0].keys.shape[2] == context and cache[0].offset == T


@settings(max_examples=10, deadline=None)
@given(chunks=st.lists(st.integers(1, 5), min_size=1, max_size=8))
def test_growing_cache_equals_full_forward(chunks):
    cfg = TransformerConfig(**{**LM_LIKE, "context": None, "num_layers": 1})
    mx.random.seed(11)
    tr = Transformer(cfg)
    x = mx.random.normal((1, sum(chunks), 32), key=mx.random.key(12))
    cache = tr.make_cache()
    assert isinstance(cache[0], KVCache)
    np.testing.assert_allclose(_np(_stream(tr, x, chunks, cache)), _np(tr(x)), rtol=1e-4, atol=1e-4)


def test_growing_cache_with_context_applies_window():
    cfg = TransformerConfig(**{**LM_LIKE, "context": 3, "num_layers": 1})
    tr = Transformer(cfg)
    x = mx.random.normal((1, 12, 32), key=mx.random.key(13))
    cache = [KVCache()]
    np.testing.assert_allclose(_np(_stream(tr, x, [2, 1, 4, 1, 1, 3], cache)), _np(tr(x)),
                               rtol=1e-4, atol=1e-4)


def test_bad_config_and_cache_mismatch():
    with pytest.raises(ValueError, match="num_heads"):
        TransformerConfig(d_model=10, num_heads=3, num_layers=1, dim_feedforward=8)
    with pytest.raises(ValueError, match="norm"):
        TransformerConfig(d_model=8, num_heads=2, num_layers=1, dim_feedforward=8, norm="batch")
    tr = Transformer(TransformerConfig(**LM_LIKE))
    with pytest.raises(ValueError, match="rotating cache"):
        tr(mx.zeros((1, 1, 32)), [RotatingKVCache(max_size=9)] * 2)


def test_rms_norm_f32_on_bf16_input_computes_in_float32():
    from moshi_mlx.nn.transformer import make_norm

    norm = make_norm("rms_norm_f32", 64)
    norm.weight = mx.array(np.linspace(0.5, 1.5, 64), dtype=mx.bfloat16)
    x = (mx.random.normal((2, 3, 64), key=mx.random.key(14)) * 1e-3).astype(mx.bfloat16)
    y = norm(x)
    assert y.dtype == mx.bfloat16
    x64 = _np(x)
    ref = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-8) * _np(norm.weight)
    np.testing.assert_allclose(_np(y), ref, rtol=1e-2, atol=1e-2)  # bf16 output rounding only


def test_non_causal_attention_sees_everything():
    cfg = TransformerConfig(**{**LM_LIKE, "causal": False, "context": None})
    tr = Transformer(cfg)
    _randomize(tr, 15)
    x = mx.random.normal((1, 7, 32), key=mx.random.key(16))
    np.testing.assert_allclose(_np(tr(x)), reference_forward(tr, x), rtol=2e-4, atol=2e-4)
