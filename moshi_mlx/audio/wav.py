"""WAV files in and out, and a polyphase windowed-sinc resampler (NumPy only).

`read_wav(path, sample_rate=24000)` reads any common RIFF/WAVE file (PCM 8/16/24/32-bit, IEEE float
32/64-bit, plain or WAVE_FORMAT_EXTENSIBLE, any rate, any channel count), mixes it to mono and
resamples it to `sample_rate`, returning float32 `[N]` in [-1, 1]. `write_wav(path, pcm, sample_rate)`
writes 16-bit PCM from float `[N]` (mono) or `[C, N]` (e.g. the user and Moshi as two channels).
`WavWriter(path, sample_rate)` writes the same format as the audio comes (`write(pcm)` per chunk,
constant memory): the header's sizes are patched after every chunk, so the file is a valid wav
holding everything written so far at any moment (an interrupted program loses nothing).
Anything unreadable (not RIFF/WAVE, no fmt or data chunk, unsupported encoding, empty, truncated)
raises `AudioFileError`, a `ValueError` whose message names the file and the problem.

`resample(x, sr_in, sr_out)` is a rational polyphase resampler: upsample by L, low-pass, downsample
by M (L/M = sr_out/sr_in reduced), with a Kaiser-windowed sinc (32 zero crossings, cutoff 0.95 of the
lower Nyquist, about 80 dB stopband), zero phase (no delay), computed blockwise to bound memory.
"""

from __future__ import annotations

import struct
from math import gcd
from pathlib import Path

import numpy as np

__all__ = ["AudioFileError", "WavWriter", "read_wav", "write_wav", "resample"]

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
_ZERO_CROSSINGS = 16  # per side
_ROLLOFF = 0.95
_KAISER_BETA = 8.0
_BLOCK = 1 << 15


class AudioFileError(ValueError):
    """A wav file that cannot be read: the message says which file and why."""


def _chunks(data: bytes, name: str) -> dict[bytes, bytes]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFileError(f"{name}: not a WAV file (no RIFF/WAVE header)")
    chunks: dict[bytes, bytes] = {}
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"data" and len(body) < size:
            if size not in (0, 0xFFFFFFFF):  # placeholders written by streaming recorders
                raise AudioFileError(
                    f"{name}: truncated: the data chunk declares {size} bytes, the file holds {len(body)}"
                )
        elif len(body) < size:
            raise AudioFileError(f"{name}: truncated {cid!r} chunk")
        if cid == b"data" and size in (0, 0xFFFFFFFF):
            body = data[pos + 8:]
        chunks.setdefault(cid, body)
        pos += 8 + size + (size & 1)
    return chunks


def _decode(fmt: bytes, raw: bytes, name: str) -> tuple[np.ndarray, int]:
    """fmt chunk + data bytes -> (float32 [N, C], sample rate)."""
    if len(fmt) < 16:
        raise AudioFileError(f"{name}: fmt chunk too short")
    tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE:
        if len(fmt) < 40:
            raise AudioFileError(f"{name}: extensible fmt chunk too short")
        tag = struct.unpack("<H", fmt[24:26])[0]  # first two bytes of the subformat GUID
    if channels < 1 or rate < 1 or block < 1:
        raise AudioFileError(f"{name}: invalid format (channels={channels}, rate={rate})")
    width = block // channels
    n = len(raw) // block
    if n == 0:
        raise AudioFileError(f"{name}: no audio (empty data chunk)")
    raw = raw[: n * block]
    if tag == _PCM and width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == _PCM and width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif tag == _PCM and width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif tag == _PCM and width == 4:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    elif tag == _FLOAT and width == 4:
        x = np.frombuffer(raw, "<f4").astype(np.float32)
    elif tag == _FLOAT and width == 8:
        x = np.frombuffer(raw, "<f8").astype(np.float32)
    else:
        raise AudioFileError(f"{name}: unsupported WAV encoding (format tag {tag}, {bits} bits)")
    return x.reshape(n, channels), rate


def read_wav(path: str | Path, sample_rate: int = 24000) -> np.ndarray:
    """Read a wav file as mono float32 `[N]` at `sample_rate` (channels averaged, resampled)."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise AudioFileError(f"{name}: cannot read ({e.strerror or e})") from e
    chunks = _chunks(data, name)
    if b"fmt " not in chunks:
        raise AudioFileError(f"{name}: no fmt chunk")
    if b"data" not in chunks:
        raise AudioFileError(f"{name}: no data chunk")
    x, rate = _decode(chunks[b"fmt "], chunks[b"data"], name)
    mono = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioFileError(f"{name}: contains NaN or infinite samples")
    return resample(mono, rate, sample_rate).astype(np.float32)


def _pcm16(pcm: np.ndarray) -> tuple[bytes, int]:
    """Float `[N]` or `[C, N]` -> (interleaved 16-bit little-endian bytes, channel count)."""
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"pcm must be [N] or [C, N], got shape {x.shape}")
    return (np.clip(x.T, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes(), x.shape[0]


def _header(channels: int, sample_rate: int, data_bytes: int) -> bytes:
    fmt = struct.pack("<HHIIHH", _PCM, channels, sample_rate, sample_rate * 2 * channels,
                      2 * channels, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate: int = 24000) -> None:
    """Write float audio `[N]` or `[C, N]` (values in [-1, 1], clipped) as 16-bit PCM."""
    frames, channels = _pcm16(pcm)
    with open(path, "wb") as f:
        f.write(_header(channels, sample_rate, len(frames)) + frames)


class WavWriter:
    """A 16-bit PCM wav written chunk by chunk (`write_wav`'s format); use as a context manager.

    After each `write` the header holds the sizes so far (two small seeks), so a reader sees a
    complete file whenever the writer stops, even if `close` never runs."""

    def __init__(self, path: str | Path, sample_rate: int = 24000, channels: int = 1) -> None:
        self.path, self.sample_rate, self.channels = Path(path), sample_rate, channels
        self.samples = 0  # per channel
        self._data = 0
        self._f = open(self.path, "wb")  # noqa: SIM115 (closed by close / __exit__)
        self._f.write(_header(channels, sample_rate, 0))
        self._f.flush()

    def write(self, pcm: np.ndarray) -> None:
        """Append float `[N]` (mono) or `[C, N]` (C = channels) samples in [-1, 1] (clipped)."""
        frames, channels = _pcm16(pcm)
        if channels != self.channels:
            raise ValueError(f"{self.path}: {channels} channels written to a "
                             f"{self.channels}-channel wav")
        self._f.write(frames)
        self._data += len(frames)
        self.samples += len(frames) // (2 * channels)
        self._f.seek(4)
        self._f.write(struct.pack("<I", 36 + self._data))
        self._f.seek(40)
        self._f.write(struct.pack("<I", self._data))
        self._f.seek(0, 2)
        self._f.flush()

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kaiser_sinc(up: int, down: int) -> tuple[np.ndarray, int]:
    """Polyphase taps for L=up, M=down: (table [up, K], half length T in upsampled samples)."""
    cutoff = _ROLLOFF / (2 * max(up, down))  # cycles per upsampled sample
    half = int(np.ceil(_ZERO_CROSSINGS / (2 * cutoff)))
    t = np.arange(-half, half + 1, dtype=np.float64)
    h = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(2 * half + 1, _KAISER_BETA) * up
    # For an output at upsampled position p, input m contributes h[p - m*up + half] for |p - m*up| <= half.
    K = (2 * half) // up + 2
    table = np.zeros((up, K))
    for phase in range(up):
        # m0 = ceil((p - half) / up); with p = q*up + phase: p - m0*up = phase - up*ceil((phase-half)/up)
        first = phase - up * (-((half - phase) // up))
        for j in range(K):
            d = first - j * up
            if -half <= d <= half:
                table[phase, j] = h[d + half]
    return table, half


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample 1-D `x` from `sr_in` to `sr_out` Hz (polyphase windowed sinc, zero phase)."""
    x = np.asarray(x, dtype=np.float32)
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    if sr_in == sr_out or x.size == 0:
        return x.copy()
    g = gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    table, half = _kaiser_sinc(up, down)
    K = table.shape[1]
    n_out = -(-x.size * up // down)
    pad = K + 1
    xp = np.concatenate([np.zeros(pad, np.float64), x.astype(np.float64), np.zeros(pad, np.float64)])
    out = np.empty(n_out, dtype=np.float32)
    for start in range(0, n_out, _BLOCK):
        n = np.arange(start, min(start + _BLOCK, n_out), dtype=np.int64)
        p = n * down
        m0 = -((half - p) // up)  # ceil((p - half) / up)
        idx = m0[:, None] + np.arange(K)[None, :] + pad
        out[start:start + n.size] = np.einsum("nk,nk->n", xp[idx], table[p % up])
    return out
