"""Long WAV files read block by block, mixed to mono and resampled, without loading the whole file.

`iter_wav(path, sample_rate)` yields float32 mono blocks at `sample_rate` whose concatenation
equals `moshi_mlx.audio.wav.read_wav(path, sample_rate)` up to float rounding: the polyphase
resampler is zero phase with a finite kernel, so each block is resampled with enough input on
both sides (a margin longer than the kernel) and cut at output positions that fall exactly on
input samples (block starts are multiples of the rate ratio's denominator). `wav_info` reads the
header only (rate, channels, frames) for progress bars.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from ..audio.wav import AudioFileError, _decode, _kaiser_sinc, resample

BLOCK_SECONDS = 10.0


@dataclass(frozen=True)
class WavInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int  # samples per channel
    fmt: bytes
    data_offset: int
    block_align: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def wav_info(path: str | Path) -> WavInfo:
    """Parse the RIFF header (fmt and the position of the data chunk) without reading the audio."""
    path = Path(path)
    name = str(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise AudioFileError(f"{name}: cannot read ({e.strerror or e})") from e
    with f:
        size = f.seek(0, 2)
        f.seek(0)
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioFileError(f"{name}: not a WAV file (no RIFF/WAVE header)")
        fmt, pos = None, 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, n = struct.unpack("<4sI", f.read(8))
            if cid == b"fmt ":
                fmt = f.read(n)
            elif cid == b"data":
                if fmt is None or len(fmt) < 16:
                    raise AudioFileError(f"{name}: no fmt chunk before the data chunk")
                channels, rate = struct.unpack("<HI", fmt[2:8])
                block = struct.unpack("<H", fmt[12:14])[0]
                if channels < 1 or rate < 1 or block < 1:
                    raise AudioFileError(f"{name}: invalid format (channels={channels}, rate={rate})")
                avail = size - pos - 8
                n = avail if n in (0, 0xFFFFFFFF) else n  # streaming recorders' placeholders
                if n > avail:
                    raise AudioFileError(f"{name}: truncated: the data chunk declares {n} bytes, "
                                         f"the file holds {avail}")
                if n // block == 0:
                    raise AudioFileError(f"{name}: no audio (empty data chunk)")
                return WavInfo(path, rate, channels, n // block, fmt, pos + 8, block)
            pos += 8 + n + (n & 1)
    raise AudioFileError(f"{name}: no data chunk" if fmt is not None else f"{name}: no fmt chunk")


def _read_mono(info: WavInfo, start: int, stop: int) -> np.ndarray:
    """Input samples [start, stop) as mono float32; zeros outside the file."""
    lo, hi = max(start, 0), min(stop, info.frames)
    out = np.zeros(max(stop - start, 0), np.float32)
    if hi > lo:
        with open(info.path, "rb") as f:
            f.seek(info.data_offset + lo * info.block_align)
            raw = f.read((hi - lo) * info.block_align)
        x, _ = _decode(info.fmt, raw, str(info.path))
        mono = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
        if not np.all(np.isfinite(mono)):
            raise AudioFileError(f"{info.path}: contains NaN or infinite samples")
        out[lo - start:hi - start] = mono
    return out


def iter_wav(path: str | Path, sample_rate: int = 24000,
             block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Yield the file as mono float32 blocks at `sample_rate` (see the module docstring)."""
    info = wav_info(path)
    sr_in = info.sample_rate
    if sr_in == sample_rate:
        step = max(1, int(block_seconds * sr_in))
        for s in range(0, info.frames, step):
            yield _read_mono(info, s, min(s + step, info.frames))
        return
    g = gcd(sr_in, sample_rate)
    up, down = sample_rate // g, sr_in // g
    table, _ = _kaiser_sinc(up, down)
    margin = -(-(table.shape[1] + 2) // down) * down  # input samples, a multiple of `down`
    step = max(1, int(block_seconds * sr_in) // down) * down
    n_out = -(-info.frames * up // down)
    for s in range(0, info.frames, step):
        e = min(s + step, info.frames)
        x = _read_mono(info, s - margin, e + margin)
        y = resample(x, sr_in, sample_rate)
        o0 = margin * up // down  # output index of input sample s inside y
        o_start, o_end = s * up // down, min(-(-e * up // down), n_out)
        yield y[o0:o0 + (o_end - o_start)]
