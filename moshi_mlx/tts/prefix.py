"""Voice cloning by audio prefix (`kyutai/tts-0.75b-en-public`): a voice recording becomes the
first seconds of the generated stream, and the model continues in that voice.

Reproduces PyTorch moshi's `TTSModel.get_prefix` and the prefix handling of
`TTSModel.generate(..., prefixes=..., cfg_is_no_prefix=...)` (`moshi/models/tts.py`):

- `encode_voice`: the recording, mono at 24 kHz, is encoded by Mimi into [n_q, T] codes; the
  last two frames are dropped (they cover Mimi's right padding), and a text row of zero tokens
  (-1, embedded as zeros) is put on top: the prefix [1 + n_q, P];
- `PrefixPlan` (one per batch of streams, used by `TtsGen`): during steps 0..P-1 the text fed is
  the prefix's text row (the state machine is not consulted, so the script starts at step P);
  codebook k of prefix frame j replaces the sampled token at step `delay_steps + d_k + j` (PT
  `_delayed` with the codebook delays plus `delay_steps`, -2 = "not forced");
- with real CFG and `cfg_is_no_prefix`, the null half of the doubled batch gets the zero token
  instead of codebook k's input while `d_k < t <= d_k + P + delay_steps` (PT `LMGen`'s
  `cfg_is_masked_until`), so the guidance pushes towards the prefix's voice;
- the audio of the first P frames is the prefix itself; `speak` does not emit it (PT
  `simple_generate` slices `pcms[prefix_length:end_step]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

ZERO, UNGENERATED = -1, -2
DROPPED_TAIL = 2  # PT get_prefix: `[0, :, :-2]`


def prefix_from_codes(codes: np.ndarray) -> np.ndarray:
    """Audio codes [n_q, P] -> a prefix [1 + n_q, P] (text row of zero tokens on top)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"expected audio codes [n_q, P], got shape {codes.shape}")
    return np.concatenate([np.full((1, codes.shape[1]), ZERO, np.int64), codes.astype(np.int64)])


def encode_voice(codec: Any, pcm: np.ndarray) -> np.ndarray:
    """A voice recording (mono float [N] at the codec's rate) -> prefix [1 + n_q, P]."""
    pcm = np.asarray(pcm, dtype=np.float32)
    codes = np.asarray(codec.encode(pcm.reshape(1, 1, -1)))[0]  # [n_q, ceil(N / 1920)]
    codes = codes[:, : max(codes.shape[1] - DROPPED_TAIL, 0)]
    if codes.shape[1] == 0:
        raise ValueError(f"the voice recording is too short: {len(pcm) / codec.sample_rate:.2f} s "
                         f"gives no frame (at least {DROPPED_TAIL + 1} frames of 80 ms needed)")
    return prefix_from_codes(codes)


def load_voice_prefix(codec: Any, path: str | Path) -> np.ndarray:
    """A .wav file (any rate / channels: mixed to mono, resampled) -> prefix [1 + n_q, P]."""
    from ..audio.wav import read_wav

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"voice file not found: {path}")
    return encode_voice(codec, read_wav(path, codec.sample_rate))


class PrefixPlan:
    """What the prefixes force at each step, for `TtsGen` (see the module docstring)."""

    def __init__(self, prefixes: Sequence[np.ndarray], audio_delays: Sequence[int], n_q: int,
                 delay_steps: int, cfg_is_no_prefix: bool = True) -> None:
        self.lengths = []
        tables = []
        for b, p in enumerate(prefixes):
            p = np.asarray(p)
            if p.ndim != 2 or p.shape[0] != 1 + n_q:
                raise ValueError(f"prefix {b}: expected [1 + n_q = {1 + n_q}, P], got {p.shape}")
            P = p.shape[1]
            self.lengths.append(P)
            table = np.full((P + delay_steps + max(audio_delays), n_q), UNGENERATED, np.int64)
            for k, d in enumerate(audio_delays):
                table[d + delay_steps: d + delay_steps + P, k] = p[1 + k]
            tables.append((p[0].tolist(), table))
        self.text = [t for t, _ in tables]
        steps = max(len(tab) for _, tab in tables)
        audio = np.full((steps, len(tables), n_q), UNGENERATED, np.int64)
        for b, (_, tab) in enumerate(tables):
            audio[: len(tab), b] = tab
        self._audio = audio
        delays = np.array([0, *audio_delays])
        # Null-half input of stream k (text first) zeroed while d_k < t <= d_k + P + delay_steps.
        self._limit = (delays[None, :] + np.array(self.lengths)[:, None] + delay_steps
                       if cfg_is_no_prefix else None)
        self._delays = delays

    def text_at(self, b: int, t: int) -> int | None:
        """The forced text id of stream b at step t, or None once its prefix is over."""
        return self.text[b][t] if t < self.lengths[b] else None

    def force_audio(self, t: int, audio: mx.array) -> mx.array:
        """Sampled audio [B, n_q] at step t -> with the prefix codes due at t put in."""
        if t >= len(self._audio):
            return audio
        row = self._audio[t]
        if (row == UNGENERATED).all():
            return audio
        return mx.where(mx.array(row != UNGENERATED), mx.array(row.astype(np.int32)), audio)

    def mask_null(self, t: int, null: mx.array) -> mx.array:
        """Null-half inputs [B, 1 + n_q, 1] at step t -> prefix streams replaced by the zero token."""
        if self._limit is None:
            return null
        zeroed = (t <= self._limit) & (t > self._delays[None, :])
        if not zeroed.any():
            return null
        return mx.where(mx.array(zeroed)[:, :, None], ZERO, null)
