"""Streaming convolutions (`moshi_mlx.nn.conv`) against a float64 NumPy reference of PyTorch's rules.

Reference semantics (moshi.modules.conv): causal conv = left pad `(k-1)*d + 1 - stride` zeros (or
the first sample for replicate) then a plain strided conv; causal transposed conv = full transposed
conv with the last `k - stride` samples trimmed. Streaming over any chunking into stride multiples
must give the same samples.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moshi_mlx.nn.conv import StreamingConv1d, StreamingConvTranspose1d


def ref_conv(x, w, b, stride, dilation, replicate):
    """x [B, T, Cin], w [out, k, in] -> [B, T/stride, out] in float64."""
    k = w.shape[1]
    pad = (k - 1) * dilation + 1 - stride
    x = x.astype(np.float64)
    left = np.repeat(x[:, :1], pad, axis=1) if replicate else np.zeros((x.shape[0], pad, x.shape[2]))
    xp = np.concatenate([left, x], axis=1)
    t_out = x.shape[1] // stride
    y = np.zeros((x.shape[0], t_out, w.shape[0]))
    for t in range(t_out):
        for j in range(k):
            y[:, t] += xp[:, t * stride + j * dilation] @ w[:, j, :].T.astype(np.float64)
    return y + (0 if b is None else b)


def ref_convtr(x, w, b, stride, groups):
    """x [B, T, Cin], w [out/g, k, in] -> [B, T*stride, out] (right trim k - stride)."""
    B, T, C = x.shape
    k = w.shape[1]
    out_ch = w.shape[0] * groups
    full = np.zeros((B, (T - 1) * stride + k, out_ch))
    for t in range(T):
        for j in range(k):
            if groups == 1:
                full[:, t * stride + j] += x[:, t].astype(np.float64) @ w[:, j, :].T
            else:
                full[:, t * stride + j] += x[:, t].astype(np.float64) * w[0, j, :]
    return full[:, : T * stride] + (0 if b is None else b)


def _rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CONVS = [(7, 1, 1, False), (3, 1, 2, False), (8, 4, 1, False), (4, 2, 1, True), (1, 1, 1, False),
         (5, 2, 1, False), (3, 1, 3, False), (6, 3, 1, True)]


@pytest.mark.parametrize("k,stride,dil,replicate", CONVS)
def test_conv_matches_reference_and_streams(k, stride, dil, replicate):
    conv = StreamingConv1d(5, 4, k, stride, dil, bias=True,
                           pad_mode="replicate" if replicate else "constant")
    conv.conv.conv.bias = mx.array(_rand((4,), 1))
    x = _rand((2, 12 * stride, 5), 2)
    y, _ = conv(mx.array(x), conv.init_state(2))
    w = np.array(conv.conv.conv.weight)
    ref = ref_conv(x, w, np.array(conv.conv.conv.bias), stride, dil, replicate)
    np.testing.assert_allclose(np.array(y), ref, atol=2e-5, rtol=1e-5)
    for chunk in (1, 5, 12):
        state, ys = conv.init_state(2), []
        for i in range(0, 12, chunk):
            yi, state = conv(mx.array(x[:, i * stride:(i + chunk) * stride]), state)
            ys.append(np.array(yi))
        np.testing.assert_array_equal(np.concatenate(ys, axis=1), np.array(y))


CONVTRS = [(8, 4, 1), (16, 8, 1), (4, 2, 6), (10, 5, 1), (5, 2, 1), (7, 2, 1), (3, 3, 1)]


@pytest.mark.parametrize("k,stride,groups", CONVTRS)
def test_convtr_matches_reference_and_streams(k, stride, groups):
    conv = StreamingConvTranspose1d(6, 6, k, stride, groups=groups)
    conv.convtr.convtr.bias = mx.array(_rand((6,), 3))
    x = _rand((2, 10, 6), 4)
    y, _ = conv(mx.array(x), conv.init_state(2))
    ref = ref_convtr(x, np.array(conv.convtr.convtr.weight), np.array(conv.convtr.convtr.bias),
                     stride, groups)
    np.testing.assert_allclose(np.array(y), ref, atol=2e-5, rtol=1e-5)
    for chunk in (1, 3):
        state, ys = conv.init_state(2), []
        for i in range(0, 10, chunk):
            yi, state = conv(mx.array(x[:, i:i + chunk]), state)
            ys.append(np.array(yi))
        np.testing.assert_allclose(np.concatenate(ys, axis=1), np.array(y), atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 4), min_size=1, max_size=6))
def test_conv_then_convtr_any_chunking(cuts):
    conv = StreamingConv1d(3, 4, 6, 2)
    convtr = StreamingConvTranspose1d(4, 3, 6, 2)
    total = sum(cuts)
    x = _rand((1, 2 * total, 3), total)
    y_full, _ = convtr(conv(mx.array(x), conv.init_state(1))[0], convtr.init_state(1))
    s1, s2, outs, pos = conv.init_state(1), convtr.init_state(1), [], 0
    for c in cuts:
        h, s1 = conv(mx.array(x[:, 2 * pos: 2 * (pos + c)]), s1)
        y, s2 = convtr(h, s2)
        outs.append(np.array(y))
        pos += c
    np.testing.assert_allclose(np.concatenate(outs, axis=1), np.array(y_full), atol=1e-6)


def test_conv_rejects_partial_stride():
    conv = StreamingConv1d(2, 2, 4, 2)
    with pytest.raises(ValueError, match="multiple of the stride"):
        conv(mx.zeros((1, 3, 2)), conv.init_state(1))
