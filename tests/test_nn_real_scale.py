"""Numerics that only show at Moshi's real sizes: RoPE at absolute positions past the 3000-step
context (head_dim 128, max_period 10000, interleaved) through the rotating KV cache."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from moshi_mlx.config import moshi_v0_1
from moshi_mlx.models.helium import temporal_config
from moshi_mlx.nn.transformer import Transformer, TransformerConfig


def _rope_pt(x: np.ndarray, offset: int, max_period: float = 10000.0) -> np.ndarray:
    """PyTorch moshi's `apply_rope` (interleaved pairs, float32 angles), in NumPy."""
    D = x.shape[-1]
    freqs = np.exp(np.arange(D // 2, dtype=np.float32) * np.float32(-math.log(max_period) * 2 / D))
    ts = (np.float32(offset) + np.arange(x.shape[-2], dtype=np.float32))[:, None]
    c, s = np.cos(freqs * ts), np.sin(freqs * ts)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * c - b * s, a * s + b * c
    return out


def test_temporal_rope_at_absolute_positions_past_context():
    cfg = temporal_config(moshi_v0_1())
    assert (cfg.head_dim, cfg.max_period, cfg.context) == (128, 10000.0, 3000)
    rope = Transformer(TransformerConfig(**{**cfg.__dict__, "num_layers": 1})).layers[0].self_attn.rope
    assert rope.traditional and rope.base == 10000.0 and rope.dims == 128
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 128)).astype(np.float32)
    for offset in (0, 2999, 3000, 4096, 12345):
        got = np.array(rope(mx.array(x), offset=offset))
        # Both sides round the angle offset * freq to float32: allow a few ulps of it.
        tol = 1e-6 + 8 * (offset + 3) * np.finfo(np.float32).eps
        np.testing.assert_allclose(got, _rope_pt(x, offset), atol=tol, rtol=0)


def test_rotating_cache_at_the_real_context_equals_windowed_full_pass():
    """Context 3000, head_dim 128: a long prefill, then single steps and a chunk past the
    context, equal one full pass with the sliding-window mask (absolute RoPE positions)."""
    mx.random.seed(0)
    cfg = TransformerConfig(d_model=128, num_heads=1, num_layers=1, dim_feedforward=256, context=3000)
    tr = Transformer(cfg)
    T = 3030
    x = mx.random.normal((1, T, 128))
    full = np.array(tr(x))
    cache = tr.make_cache()
    outs, pos = [], 0
    for n in [2990] + [1] * 17 + [7] + [1] * 16:
        outs.append(tr(x[:, pos:pos + n], cache))
        pos += n
    got = np.array(mx.concatenate(outs, axis=1))
    np.testing.assert_allclose(got, full, atol=2e-5, rtol=0)
    assert cache[0].offset == T and cache[0].keys.shape[2] == 3000


def test_7b_norms_are_rms_f32_with_eps_1e8():
    """Every norm of the (lazily built) 7B: RMSNorm, eps 1e-8, computed in float32 for bf16
    inputs (PT "rms_norm_f32"); at tiny activations the eps decides the value."""
    from moshi_mlx.models.lm import Lm

    lm = Lm(moshi_v0_1())
    norms = [lm.out_norm, lm.transformer.layers[31].norm1, lm.transformer.layers[0].norm2,
             lm.depformer.slices[7].transformer.layers[5].norm1]
    rng = np.random.default_rng(0)
    for norm in norms:
        d = norm.weight.shape[0]
        w = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
        norm.weight = mx.array(w).astype(mx.bfloat16)
        x = (1e-5 * rng.standard_normal((1, 2, d))).astype(np.float32)
        x16 = np.array(mx.array(x).astype(mx.bfloat16).astype(mx.float32))
        want = x16 / np.sqrt((x16.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-8)
        want = want * np.array(norm.weight.astype(mx.float32))
        got = norm(mx.array(x16).astype(mx.bfloat16))
        assert got.dtype == mx.bfloat16
        np.testing.assert_allclose(np.array(got.astype(mx.float32)), want, rtol=1e-2, atol=1e-3)
