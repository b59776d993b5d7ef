"""Causal streaming 1-D convolutions with explicit state, computed as matrix products.

Reproduces `moshi.modules.conv.StreamingConv1d` / `StreamingConvTranspose1d` (causal, `norm="none"`):

- conv: the input is left-padded with the last `k_eff - stride` samples of the previous chunk
  (`k_eff = (k - 1) * dilation + 1`), zeros at the start of a stream, or the first sample repeated for
  `pad_mode="replicate"`. Chunk lengths must be multiples of the stride.
- transposed conv: the full output of a chunk is `(T - 1) * stride + k` long; the first `T * stride`
  samples are emitted, the last `k - stride` (bias removed) are kept and added to the next chunk's start.

A whole sequence is one chunk on a fresh state, so batch and streaming share one code path.

Layout is NLC (`[B, T, C]`, MLX's convention). Weights keep Kyutai's MLX shapes so parameter names and
shapes equal Kyutai's MLX Mimi: conv `[out, k, in]`, transposed conv `[out // groups, k, in]`.
MLX's CPU `conv1d` / `conv_transpose1d` are slow (the latter multiplies the stride-dilated zeros), so
both are computed as one matmul each: im2col for the conv, and for the transposed conv one product
with all taps followed by an overlap-add of `ceil(k / stride)` shifted phases. The weight holders'
`matmul_view` gives the matrix each product reads (a view of the weight); the compute policy
(`moshi_mlx.compute`) may store the weight so that this view is contiguous.

Streaming modules are pure: `module(x, state) -> (y, state)`; `module.init_state(batch_size)` gives the
state of a fresh stream (a dict of arrays, so it can cross `mx.compile`).
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn

State = dict[str, Any]

class Conv1d(nn.Module):
    """Plain conv weights `[out, k, in]` (+ bias); applied by `StreamingConv1d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        scale = 1.0 / math.sqrt(in_channels * kernel_size)
        self.weight = mx.random.uniform(-scale, scale, (out_channels, kernel_size, in_channels))
        if bias:
            self.bias = mx.zeros((out_channels,))

    @staticmethod
    def matmul_view(w: mx.array) -> mx.array:
        """`[out, k, in]` -> the `[k * in, out]` im2col matrix (tap-major). Transposed before the
        reshape, so it is a free view of a weight stored `[k, in, out]` (`moshi_mlx.compute`)."""
        return w.transpose(1, 2, 0).reshape(-1, w.shape[0])

    def from_matmul_view(self, m: mx.array) -> mx.array:
        """Inverse of `matmul_view`."""
        out, k, cin = self.weight.shape
        return m.reshape(k, cin, out).transpose(2, 0, 1)


class ConvTranspose1d(nn.Module):
    """Transposed conv weights `[out // groups, k, in]` (+ bias); applied by the streaming wrapper."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        scale = 1.0 / math.sqrt(in_channels * kernel_size / groups)
        self.weight = mx.random.uniform(
            -scale, scale, (out_channels // groups, kernel_size, in_channels)
        )
        if bias:
            self.bias = mx.zeros((out_channels,))
        self.depthwise = groups > 1

    def matmul_view(self, w: mx.array) -> mx.array:
        """`[out, k, in]` -> `[in, k * out]` (all taps, one product; a free view of a weight
        stored `[in, k, out]`); depthwise: `[k, C]`."""
        if self.depthwise:
            return w[0]  # an elementwise product, not a matmul
        return w.transpose(2, 1, 0).reshape(w.shape[2], -1)

    def from_matmul_view(self, m: mx.array) -> mx.array:
        """Inverse of `matmul_view`."""
        out, k, cin = self.weight.shape
        if self.depthwise:
            return m[None]
        return m.reshape(cin, k, out).transpose(2, 1, 0)


class NormConv1d(nn.Module):
    """Name-only wrapper (`.conv`) mirroring the checkpoint's `X.conv.conv.weight` nesting."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()
        self.conv = Conv1d(*args, **kwargs)


class NormConvTranspose1d(nn.Module):
    """Name-only wrapper (`.convtr`) mirroring the checkpoint's `X.convtr.convtr.weight` nesting."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()
        self.convtr = ConvTranspose1d(*args, **kwargs)


class StreamingConv1d(nn.Module):
    """Causal conv with left-context state. Input `[B, T, C_in]`, T a multiple of the stride."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
    ):
        super().__init__()
        if pad_mode not in ("constant", "replicate"):
            raise ValueError(f"pad_mode must be 'constant' or 'replicate', got {pad_mode!r}")
        self.conv = NormConv1d(in_channels, out_channels, kernel_size, bias=bias)
        self._in = in_channels
        self._out = out_channels
        self._k = kernel_size
        self._stride = stride
        self._dilation = dilation
        self._replicate = pad_mode == "replicate"

    @property
    def stride(self) -> int:
        return self._stride

    @property
    def context(self) -> int:
        """Samples of left context kept in the state: `k_eff - stride`."""
        return (self._k - 1) * self._dilation + 1 - self._stride

    def init_state(self, batch_size: int) -> State:
        state: State = {"prev": mx.zeros((batch_size, max(self.context, 0), self._in))}
        if self._replicate and self.context > 0:
            state["first"] = mx.ones((batch_size, 1, 1), dtype=mx.bool_)
        return state

    def _matrix(self) -> mx.array:
        """Weights as one `[k * in, out]` matrix (im2col order: tap-major), a view."""
        return self.conv.conv.matmul_view(self.conv.conv.weight)

    def __call__(self, x: mx.array, state: State) -> tuple[mx.array, State]:
        B, T, C = x.shape
        s, k, d = self._stride, self._k, self._dilation
        if T % s != 0:
            raise ValueError(f"chunk length {T} is not a multiple of the stride {s}")
        ctx = self.context
        if ctx > 0:
            prev = state["prev"]
            if self._replicate:
                prev = mx.where(state["first"], x[:, :1], prev)
            x = mx.concatenate([prev, x], axis=1)
            new_state: State = {"prev": x[:, x.shape[1] - ctx:]}
            if self._replicate:
                new_state["first"] = mx.zeros_like(state["first"])
        else:
            new_state = state
        t_out = T // s
        if k == 1 and s == 1:
            cols = x
        elif d == 1 and k % s == 0 and x.shape[1] == (t_out + k // s - 1) * s:
            # Frames of `stride` samples side by side: window t = frames t .. t + k/s - 1.
            frames = x.reshape(B, t_out + k // s - 1, s * C)
            parts = [frames[:, j: j + t_out] for j in range(k // s)]
            cols = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=-1)
        else:
            parts = [x[:, j * d: j * d + (t_out - 1) * s + 1: s] for j in range(k)]
            cols = mx.concatenate(parts, axis=-1)
        y = cols @ self._matrix()
        if "bias" in self.conv.conv:
            y = y + self.conv.conv.bias
        return y, new_state


class StreamingConvTranspose1d(nn.Module):
    """Causal transposed conv with overlap state. Input `[B, T, C_in]`, output `[B, T * stride, C_out]`.

    `groups` is 1 or `in_channels == out_channels` (depthwise, Mimi's upsampler).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if groups not in (1, in_channels) or (groups > 1 and in_channels != out_channels):
            raise ValueError("only groups=1 or depthwise (groups == in == out) are supported")
        self.convtr = NormConvTranspose1d(in_channels, out_channels, kernel_size, groups, bias)
        self._in = in_channels
        self._out = out_channels
        self._k = kernel_size
        self._stride = stride
        self._groups = groups
        self._phases = -(-kernel_size // stride)  # ceil(k / stride)

    @property
    def stride(self) -> int:
        return self._stride

    def init_state(self, batch_size: int) -> State:
        return {"partial": mx.zeros((batch_size, max(self._k - self._stride, 0), self._out))}

    def _matrix(self) -> mx.array:
        """Weights padded to `phases * stride` taps: `[in, taps * out]` (or `[taps, C]` depthwise)."""
        convtr = self.convtr.convtr
        mat = convtr.matmul_view(convtr.weight)  # [in, k * out] or [k, C]: a view
        taps = self._phases * self._stride
        if taps == self._k:
            return mat
        # Zero taps appended up to phases * stride (k not a multiple of the stride; not Mimi's).
        if self._groups == 1:
            mat = mat.reshape(self._in, self._k, self._out)
            return mx.pad(mat, [(0, 0), (0, taps - self._k), (0, 0)]).reshape(self._in, -1)
        return mx.pad(mat, [(0, taps - self._k), (0, 0)])

    def __call__(self, x: mx.array, state: State) -> tuple[mx.array, State]:
        B, T, _ = x.shape
        s, k, m, c = self._stride, self._k, self._phases, self._out
        if self._groups == 1:
            z = x @ self._matrix()  # [B, T, taps * out]
        else:
            z = x[:, :, None, :] * self._matrix()  # [B, T, taps, C]
        z = z.reshape(B, T, m, s * c)
        # Overlap-add: input step t, phase i lands on output frame t + i (frames of `stride`).
        full = mx.pad(z[:, :, 0], [(0, 0), (0, m - 1), (0, 0)])
        for i in range(1, m):
            full = full + mx.pad(z[:, :, i], [(0, 0), (i, m - 1 - i), (0, 0)])
        full = full.reshape(B, (T + m - 1) * s, c)
        y = full[:, : T * s]
        tail = full[:, T * s: (T - 1) * s + k]
        keep = k - s
        if keep > 0:
            partial = state["partial"]
            y = mx.concatenate([y[:, :keep] + partial, y[:, keep:]], axis=1) if T * s > keep \
                else y + partial[:, : T * s]
            if T * s < keep:
                # A chunk shorter than the overlap: carry the rest of the old partial forward.
                tail = tail + mx.concatenate(
                    [partial[:, T * s:], mx.zeros((B, T * s, c), dtype=partial.dtype)], axis=1
                )
            new_state = {"partial": tail}
        else:
            new_state = state
        if "bias" in self.convtr.convtr:
            y = y + self.convtr.convtr.bias
        return y, new_state
