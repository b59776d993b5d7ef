"""One conversation at the PCM level: 80 ms of the user's audio in, 80 ms of Moshi's audio out.

Per frame: Mimi `encode_step` (1920 samples -> 8 codes) -> `LmGen.step` (user codes -> Moshi's text
token and, once the acoustic delay allows, Moshi's 8 codes) -> Mimi `decode_step` (8 codes -> 1920
samples). No threads, devices or UI here: the live chat, file mode, the benchmarks and the tests all
drive `Conversation.step` and consume the typed events it returns.

Timing convention (reference.md section 3, the MLX/Rust one `moshi_mlx.engine` follows): step s
consumes the user's frame s and returns Moshi's text token of step s and Moshi's aligned audio frame
s-1, so Moshi's voice trails its text by one frame; step 0 has no audio frame yet and yields 80 ms
of silence, which keeps Moshi's output exactly as long as the user's input.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

FRAME_SIZE = 1920  # 24000 Hz / 12.5 Hz
SAMPLE_RATE = 24000
FRAME_S = FRAME_SIZE / SAMPLE_RATE  # 0.08 s


@dataclass(frozen=True)
class TextPiece:
    """A visible piece of Moshi's text (padding tokens are not reported)."""

    frame: int
    token: int
    text: str

    @property
    def time_s(self) -> float:
        return self.frame * FRAME_S


@dataclass(frozen=True, eq=False)
class AudioFrame:
    """Moshi's 1920 output samples for one step (silence before the first generated frame)."""

    frame: int
    pcm: np.ndarray  # float32 [1920]
    generated: bool  # False while the acoustic delay still holds Moshi's first frame


@dataclass(frozen=True)
class FrameTiming:
    """Wall-clock cost of one step, in milliseconds."""

    frame: int
    encode_ms: float
    lm_ms: float
    decode_ms: float

    @property
    def total_ms(self) -> float:
        return self.encode_ms + self.lm_ms + self.decode_ms


Event = TextPiece | AudioFrame | FrameTiming


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


class Conversation:
    """Drives Mimi + LmGen one frame at a time; owns the codec streaming state."""

    def __init__(self, lm_gen: Any, mimi: Any, tokenizer: Any) -> None:
        self.lm_gen = lm_gen
        self.mimi = mimi
        self.tokenizer = tokenizer
        self.frame_size = int(getattr(mimi, "frame_size", FRAME_SIZE))
        self.reset()

    def reset(self) -> None:
        """Fresh codec state and generation state: a new conversation."""
        self.state = self.mimi.init_state(1)
        if hasattr(self.lm_gen, "reset"):
            self.lm_gen.reset()
        self.frame = 0
        self.last_audio_codes: np.ndarray | None = None

    def step(self, pcm: np.ndarray) -> list[Event]:
        """Feed one frame of user audio (float32 [1920], 24 kHz); returns this step's events."""
        import mlx.core as mx

        pcm = np.asarray(pcm, np.float32).reshape(1, 1, -1)
        if pcm.shape[-1] != self.frame_size:
            raise ValueError(f"expected {self.frame_size} samples per frame, got {pcm.shape[-1]}")
        t0 = time.perf_counter()
        codes = self.mimi.encode_step(pcm, self.state)
        codes = mx.array(_to_numpy(codes)[:, :, 0].astype(np.int32))  # [B=1, K=8]
        t1 = time.perf_counter()
        out = self.lm_gen.step(codes)
        token = int(np.asarray(out.text).reshape(-1)[0])
        audio = None if out.audio is None else np.asarray(out.audio)
        self.last_audio_codes = audio  # Moshi's 8 codes of this step (None during the delay)
        t2 = time.perf_counter()
        if audio is not None:
            frame_codes = audio.reshape(1, -1, 1).astype(np.int32)  # [B, dep_q, 1]
            pcm_out = _to_numpy(self.mimi.decode_step(frame_codes, self.state))
            pcm_out = pcm_out.reshape(-1).astype(np.float32)
        else:
            pcm_out = np.zeros(self.frame_size, np.float32)
        t3 = time.perf_counter()
        events: list[Event] = []
        text = self.tokenizer.piece(token)
        if text:
            events.append(TextPiece(self.frame, token, text))
        events.append(AudioFrame(self.frame, pcm_out, audio is not None))
        events.append(FrameTiming(self.frame, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))
        self.frame += 1
        return events

    def warmup(self, frames: int = 4) -> list[float]:
        """Run a few silent frames, then start over (compiles kernels, fills allocator pools).
        Returns each warm-up frame's total time in ms (the first includes compilation)."""
        silence = np.zeros(self.frame_size, np.float32)
        times = []
        for _ in range(frames):
            times += [e.total_ms for e in self.step(silence) if isinstance(e, FrameTiming)]
        self.reset()
        return times


def frames_of(pcm: np.ndarray, frame_size: int = FRAME_SIZE, pad_s: float = 0.0) -> Iterator[np.ndarray]:
    """Cut mono pcm into whole frames: zero-pad the last one, then at least `pad_s` s of silence."""
    pcm = np.asarray(pcm, np.float32).reshape(-1)
    n = -(-len(pcm) // frame_size) + math.ceil(pad_s * SAMPLE_RATE / frame_size - 1e-6)
    padded = np.zeros(n * frame_size, np.float32)
    padded[: len(pcm)] = pcm
    for i in range(n):
        yield padded[i * frame_size:(i + 1) * frame_size]
