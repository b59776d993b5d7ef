"""Mimi, Kyutai's streaming speech codec, in MLX with explicit per-stream state.

Reproduces `moshi.models.compression.MimiModel` (PyTorch, the oracle) at inference:

    encode: pcm 24 kHz -> SEANet encoder (25 Hz) -> transformer -> downsample conv (12.5 Hz) -> split RVQ
    decode: codes -> RVQ sum -> depthwise transposed-conv upsample (25 Hz) -> transformer -> SEANet decoder

One frame is `cfg.frame_size` samples (1920 = 24000 / 12.5) and gives one code per codebook.
Everything is causal: `encode_step` / `decode_step` take any whole number of frames and carry a
`MimiState` (conv left context, transposed-conv overlaps, transformer window caches), so several
independent streams can share one model. A full-sequence `encode` / `decode` is the same code on a
fresh state (in chunks of `CHUNK_FRAMES` to bound memory), so streaming equals batch (up to float
summation order inside BLAS).

Public shapes follow PyTorch: pcm `[B, 1, N]` float32, codes `[B, K, T]` (uint32 here).
Internally tensors are NLC `[B, T, C]`. Module names equal Kyutai's MLX Mimi; `weights/mimi.py`
maps the released PyTorch checkpoint onto them. Steps run through `mx.compile` (one trace per shape
and codebook count); call `prepare()` after changing weights (done by `update` / `load_weights`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ...config import MimiConfig
from ...nn.conv import StreamingConv1d, StreamingConvTranspose1d
from .quantizer import EuclideanCodebook, SplitResidualVectorQuantizer
from .seanet import SeanetDecoder, SeanetEncoder
from .transformer import ProjectedTransformer

# Frames per chunk in full-sequence `encode` / `decode` (bounds memory: the first conv's im2col
# holds k * 64 floats per sample, ~1 GB for a minute of audio in one pass).
CHUNK_FRAMES = 32


class ConvDownsample1d(nn.Module):
    """Learnt 25 -> 12.5 Hz conv (k = 2 * stride, no bias, replicate padding): `conv.conv.conv`."""

    def __init__(self, stride: int, dim: int):
        super().__init__()
        self.conv = StreamingConv1d(dim, dim, 2 * stride, stride, bias=False, pad_mode="replicate")


class ConvTrUpsample1d(nn.Module):
    """Depthwise 12.5 -> 25 Hz transposed conv (PyTorch's kept "channel-wise bug"): `convtr.convtr.convtr`."""

    def __init__(self, stride: int, dim: int):
        super().__init__()
        self.convtr = StreamingConvTranspose1d(dim, dim, 2 * stride, stride, groups=dim, bias=False)


@dataclass
class MimiState:
    """Streaming state of `batch_size` independent streams; updated in place by the step calls."""

    batch_size: int
    enc: dict[str, Any] = field(repr=False)
    dec: dict[str, Any] = field(repr=False)
    frames_encoded: int = 0
    frames_decoded: int = 0


class Mimi(nn.Module):
    """`compiled=False` runs the same cores eagerly (no per-shape tracing, no kernel JIT on CPU);
    the environment variable `MOSHI_MLX_COMPILE=0` sets that default."""

    def __init__(self, cfg: MimiConfig, compiled: bool | None = None):
        super().__init__()
        self.cfg = cfg
        if compiled is None:
            compiled = os.environ.get("MOSHI_MLX_COMPILE", "1") != "0"
        self.compiled = compiled
        dim = cfg.dimension
        self.encoder = SeanetEncoder(cfg)
        self.decoder = SeanetDecoder(cfg)
        self.encoder_transformer = ProjectedTransformer(cfg)
        self.decoder_transformer = ProjectedTransformer(cfg)
        self.quantizer = SplitResidualVectorQuantizer(
            cfg.quantizer_dimension, dim, dim, cfg.quantizer_bins, cfg.quantizer_n_q
        )
        self._stride = cfg.downsample_stride
        if self._stride > 1:
            self.downsample = ConvDownsample1d(self._stride, dim)
            self.upsample = ConvTrUpsample1d(self._stride, dim)
        self._compiled: dict[tuple[str, int, str], Any] = {}
        self._prepared = False

    # -- properties ---------------------------------------------------------------------------
    @property
    def frame_size(self) -> int:
        return self.cfg.frame_size

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def total_codebooks(self) -> int:
        return self.quantizer.total_codebooks

    # -- weights ------------------------------------------------------------------------------
    def update(self, parameters: dict, strict: bool = True) -> Mimi:  # type: ignore[override]
        super().update(parameters, strict=strict)
        self._compiled.clear()
        self._prepared = False
        return self

    def prepare(self) -> None:
        """Precompute the codebook vectors (eagerly, outside any compiled trace).

        Call it after assigning parameters directly (`update` / `load_weights` do it for you):
        compiled steps hold the weights they were traced with, so they are dropped here too.
        """
        self._compiled.clear()
        derived = []
        for m in self.modules():
            if isinstance(m, EuclideanCodebook):
                derived.extend(m.vectors())
        mx.eval(derived)
        self._prepared = True

    # -- state ----------------------------------------------------------------------------------
    def init_state(self, batch_size: int = 1) -> MimiState:
        enc: dict[str, Any] = {
            "seanet": self.encoder.init_state(batch_size),
            "transformer": self.encoder_transformer.init_state(batch_size),
        }
        dec: dict[str, Any] = {
            "transformer": self.decoder_transformer.init_state(batch_size),
            "seanet": self.decoder.init_state(batch_size),
        }
        if self._stride > 1:
            enc["downsample"] = self.downsample.conv.init_state(batch_size)
            dec["upsample"] = self.upsample.convtr.init_state(batch_size)
        return MimiState(batch_size, enc, dec)

    # -- pure cores -----------------------------------------------------------------------------
    def _latent_core(self, x: mx.array, st: dict[str, Any]) -> tuple[mx.array, dict]:
        """x `[B, N, 1]` -> unquantized latent `[B, N / frame_size, D]`."""
        new: dict[str, Any] = {}
        h, new["seanet"] = self.encoder(x, st["seanet"])
        h, new["transformer"] = self.encoder_transformer(h, st["transformer"])
        if self._stride > 1:
            h, new["downsample"] = self.downsample.conv(h, st["downsample"])
        return h, new

    def _encode_core(self, x: mx.array, st: dict[str, Any], n_q: int) -> tuple[mx.array, dict]:
        """x `[B, N, 1]` -> codes `[B, n_q, N / frame_size]`."""
        h, new = self._latent_core(x, st)
        return self.quantizer.encode(h, n_q), new

    def _decode_core(self, codes: mx.array, st: dict[str, Any]) -> tuple[mx.array, dict]:
        """codes `[B, K, T]` -> pcm `[B, T * frame_size, 1]`."""
        new: dict[str, Any] = {}
        h = self.quantizer.decode(codes)
        if self._stride > 1:
            h, new["upsample"] = self.upsample.convtr(h, st["upsample"])
        h, new["transformer"] = self.decoder_transformer(h, st["transformer"])
        y, new["seanet"] = self.decoder(h, st["seanet"])
        return y, new

    def _fn(self, kind: str, n_q: int = 0) -> Any:
        if not self._prepared:
            self.prepare()
        # One trace per stream: a trace keeps the stream it was made on (MLX's compile cache keys
        # on the inputs only), so a step run under `mx.stream(mx.cpu)` (the pipelined schedule on
        # a Mac) must not reuse a GPU trace.
        key = (kind, n_q, str(mx.default_stream(mx.default_device())))
        if key not in self._compiled:
            if kind == "enc":
                fn = lambda x, st: self._encode_core(x, st, n_q)  # noqa: E731
            else:
                fn = self._decode_core
            self._compiled[key] = mx.compile(fn) if self.compiled else fn
        return self._compiled[key]

    # -- public API ---------------------------------------------------------------------------
    def _pcm_to_nlc(self, pcm: Any, pad: bool) -> mx.array:
        x = mx.array(pcm) if not isinstance(pcm, mx.array) else pcm
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"pcm must be [B, 1, N], got shape {tuple(x.shape)}")
        x = x.astype(mx.float32)
        n = x.shape[-1]
        fs = self.frame_size
        if n % fs:
            if not pad:
                raise ValueError(f"streaming input length {n} is not a multiple of {fs}")
            x = mx.pad(x, [(0, 0), (0, 0), (0, fs - n % fs)])
        return x.reshape(x.shape[0], -1, 1)

    def _codes(self, codes: Any) -> mx.array:
        c = mx.array(codes) if not isinstance(codes, mx.array) else codes
        if c.ndim != 3:
            raise ValueError(f"codes must be [B, K, T], got shape {tuple(c.shape)}")
        return c.astype(mx.uint32)

    def encode(self, pcm: Any, num_codebooks: int | None = None) -> mx.array:
        """pcm `[B, 1, N]` -> codes `[B, K, ceil(N / frame_size)]` (right-padded like PyTorch).

        Runs the streaming path over chunks of `CHUNK_FRAMES` frames on a fresh state: the same
        result as one pass (streaming equals batch), with memory bounded for long files.
        """
        x = self._pcm_to_nlc(pcm, pad=True)
        n_q = num_codebooks or self.total_codebooks
        st = self.init_state(x.shape[0])
        step = CHUNK_FRAMES * self.frame_size
        out = []
        for i in range(0, x.shape[1], step):
            codes, st.enc = self._fn("enc", n_q)(x[:, i:i + step], st.enc)
            mx.eval(codes, st.enc)
            out.append(codes)
        return out[0] if len(out) == 1 else mx.concatenate(out, axis=-1)

    def encode_latent(self, pcm: Any) -> mx.array:
        """pcm `[B, 1, N]` -> the latent before quantization, `[B, T, D]` at the frame rate."""
        x = self._pcm_to_nlc(pcm, pad=True)
        if not self._prepared:
            self.prepare()
        return self._latent_core(x, self.init_state(x.shape[0]).enc)[0]

    def decode(self, codes: Any) -> mx.array:
        """codes `[B, K, T]` -> pcm `[B, 1, T * frame_size]`."""
        c = self._codes(codes)
        st = self.init_state(c.shape[0])
        out = []
        for i in range(0, c.shape[-1], CHUNK_FRAMES):
            y, st.dec = self._fn("dec")(c[..., i:i + CHUNK_FRAMES], st.dec)
            mx.eval(y, st.dec)
            out.append(y.reshape(y.shape[0], 1, -1))
        return out[0] if len(out) == 1 else mx.concatenate(out, axis=-1)

    def encode_step(self, pcm: Any, state: MimiState, num_codebooks: int | None = None) -> mx.array:
        """pcm `[B, 1, n * frame_size]` -> codes `[B, K, n]`; advances `state`."""
        x = self._pcm_to_nlc(pcm, pad=False)
        _check_batch(x.shape[0], state)
        n_q = num_codebooks or self.total_codebooks
        codes, state.enc = self._fn("enc", n_q)(x, state.enc)
        state.frames_encoded += x.shape[1] // self.frame_size
        return codes

    def decode_step(self, codes: Any, state: MimiState) -> mx.array:
        """codes `[B, K, n]` -> pcm `[B, 1, n * frame_size]`; advances `state`."""
        c = self._codes(codes)
        _check_batch(c.shape[0], state)
        y, state.dec = self._fn("dec")(c, state.dec)
        state.frames_decoded += c.shape[-1]
        return y.reshape(y.shape[0], 1, -1)


def _check_batch(b: int, state: MimiState) -> None:
    if b != state.batch_size:
        raise ValueError(f"input batch {b} does not match the state's batch size {state.batch_size}")
