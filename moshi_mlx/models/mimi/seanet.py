"""SEANet encoder and decoder of Mimi (causal, streaming, explicit state).

Reproduces `moshi.modules.seanet.SEANetEncoder` / `SEANetDecoder` with Mimi's settings: causal convs,
constant padding, no norm, ELU(1), identity skip ("true_skip"), `compress` hidden reduction in the
residual blocks. Module names follow Kyutai's MLX Mimi (`init_conv1d`, `layers.{i}.residuals.{j}`,
`layers.{i}.downsample` / `upsample`, `final_conv1d`, `block.{0,1}`), which `weights/mimi.py` maps
from the PyTorch `model.{index}` sequence.

Encoder: conv k -> per ratio (reversed: 4, 5, 6, 8): residual blocks, ELU, conv k=2r stride r ->
ELU, conv last_k -> `dimension`. Decoder mirrors it with transposed convs. Layout NLC `[B, T, C]`.
State: a list with one entry per streaming conv, in call order (see `conv.py`).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ...config import MimiConfig
from ...nn.conv import StreamingConv1d, StreamingConvTranspose1d


def elu(x: mx.array) -> mx.array:
    """ELU with alpha 1 (PyTorch `nn.ELU()`): x if x > 0 else exp(x) - 1."""
    return mx.where(x > 0, x, mx.expm1(mx.minimum(x, 0.0)))


class SeanetResnetBlock(nn.Module):
    """ELU -> conv(k, dilation) dim -> dim/compress -> ELU -> conv(1) -> dim, plus identity skip."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int):
        super().__init__()
        hidden = dim // compress
        self.block = [
            StreamingConv1d(dim, hidden, kernel_size, dilation=dilation),
            StreamingConv1d(hidden, dim, 1),
        ]

    def init_state(self, batch_size: int) -> list[Any]:
        return [c.init_state(batch_size) for c in self.block]

    def __call__(self, x: mx.array, state: list[Any]) -> tuple[mx.array, list[Any]]:
        h, s0 = self.block[0](elu(x), state[0])
        h, s1 = self.block[1](elu(h), state[1])
        return x + h, [s0, s1]


def _residuals(cfg: MimiConfig, dim: int) -> list[SeanetResnetBlock]:
    return [
        SeanetResnetBlock(dim, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress)
        for j in range(cfg.n_residual_layers)
    ]


class EncoderLayer(nn.Module):
    def __init__(self, cfg: MimiConfig, dim: int, ratio: int):
        super().__init__()
        self.residuals = _residuals(cfg, dim)
        self.downsample = StreamingConv1d(dim, 2 * dim, 2 * ratio, stride=ratio)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: MimiConfig, dim: int, ratio: int):
        super().__init__()
        self.upsample = StreamingConvTranspose1d(dim, dim // 2, 2 * ratio, stride=ratio)
        self.residuals = _residuals(cfg, dim // 2)


class SeanetEncoder(nn.Module):
    """Audio `[B, T, channels]` (T a multiple of the hop) -> latent `[B, T / hop, dimension]`."""

    def __init__(self, cfg: MimiConfig):
        super().__init__()
        nf = cfg.n_filters
        self.init_conv1d = StreamingConv1d(cfg.channels, nf, cfg.kernel_size)
        self.layers = [
            EncoderLayer(cfg, nf * 2**i, ratio) for i, ratio in enumerate(reversed(cfg.ratios))
        ]
        self.final_conv1d = StreamingConv1d(
            nf * 2 ** len(cfg.ratios), cfg.dimension, cfg.last_kernel_size
        )

    def init_state(self, batch_size: int) -> list[Any]:
        state: list[Any] = [self.init_conv1d.init_state(batch_size)]
        for layer in self.layers:
            state += [r.init_state(batch_size) for r in layer.residuals]
            state.append(layer.downsample.init_state(batch_size))
        state.append(self.final_conv1d.init_state(batch_size))
        return state

    def __call__(self, x: mx.array, state: list[Any]) -> tuple[mx.array, list[Any]]:
        new: list[Any] = []
        x, s = self.init_conv1d(x, state[0])
        new.append(s)
        for layer in self.layers:
            for r in layer.residuals:
                x, s = r(x, state[len(new)])
                new.append(s)
            x, s = layer.downsample(elu(x), state[len(new)])
            new.append(s)
        x, s = self.final_conv1d(elu(x), state[len(new)])
        new.append(s)
        return x, new


class SeanetDecoder(nn.Module):
    """Latent `[B, T, dimension]` -> audio `[B, T * hop, channels]`."""

    def __init__(self, cfg: MimiConfig):
        super().__init__()
        nf = cfg.n_filters
        top = nf * 2 ** len(cfg.ratios)
        self.init_conv1d = StreamingConv1d(cfg.dimension, top, cfg.kernel_size)
        self.layers = [
            DecoderLayer(cfg, top // 2**i, ratio) for i, ratio in enumerate(cfg.ratios)
        ]
        self.final_conv1d = StreamingConv1d(nf, cfg.channels, cfg.last_kernel_size)

    def init_state(self, batch_size: int) -> list[Any]:
        state: list[Any] = [self.init_conv1d.init_state(batch_size)]
        for layer in self.layers:
            state.append(layer.upsample.init_state(batch_size))
            state += [r.init_state(batch_size) for r in layer.residuals]
        state.append(self.final_conv1d.init_state(batch_size))
        return state

    def __call__(self, x: mx.array, state: list[Any]) -> tuple[mx.array, list[Any]]:
        new: list[Any] = []
        x, s = self.init_conv1d(x, state[0])
        new.append(s)
        for layer in self.layers:
            x, s = layer.upsample(elu(x), state[len(new)])
            new.append(s)
            for r in layer.residuals:
                x, s = r(x, state[len(new)])
                new.append(s)
        x, s = self.final_conv1d(elu(x), state[len(new)])
        new.append(s)
        return x, new
