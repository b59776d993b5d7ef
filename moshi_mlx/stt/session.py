"""One batch of audio streams through Mimi and the STT LM: frames in, timed words and events out.

`SttSession(lm, codec, tokenizer, stt)` runs B streams in lockstep, one 80 ms frame each per
`feed`. It puts Kyutai's padding around each stream as their reference scripts do: the STT
config's `audio_silence_prefix_seconds` of silence before the audio (fed at construction), and
`audio_delay_seconds` plus 1 s of silence after it (`finish`), so the last words, which the model
writes a fixed delay after hearing them, come out. Each stream gets `Piece` (display text of every
visible token, as it arrives), `Word` (once timed) and `VadEvent` (end of turn, with VAD heads)
events, in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .gen import SttGen, SttStep
from .words import FRAME_RATE, VAD_HEAD, VadEvent, VadTracker, Word, WordTimer

TAIL_SECONDS = 1.0  # silence after the delay's worth, as Kyutai's MLX and Rust tools add


@dataclass(frozen=True)
class SttConfig:
    """The `stt_config` block of an STT checkpoint's `config.json`."""

    audio_delay_seconds: float
    audio_silence_prefix_seconds: float = 0.0

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SttConfig:
        stt = cfg.get("stt_config")
        if not isinstance(stt, dict) or "audio_delay_seconds" not in stt:
            raise ValueError("not a speech-to-text checkpoint: its config.json has no "
                             "stt_config.audio_delay_seconds")
        delay = float(stt["audio_delay_seconds"])
        prefix = float(stt.get("audio_silence_prefix_seconds", 0.0))
        if not (delay >= 0 and prefix >= 0):
            raise ValueError(f"invalid stt_config {stt}: delays must be >= 0")
        return cls(delay, prefix)

    @property
    def prefix_frames(self) -> int:
        return math.ceil(self.audio_silence_prefix_seconds * FRAME_RATE)

    @property
    def suffix_frames(self) -> int:
        return math.ceil((self.audio_delay_seconds + TAIL_SECONDS) * FRAME_RATE)

    @property
    def delay_frames(self) -> int:
        """The delay in whole frames, as Kyutai's Rust server counts it (truncated)."""
        return int(self.audio_delay_seconds * FRAME_RATE)

    def to_dict(self) -> dict[str, float]:
        return {"audio_delay_seconds": self.audio_delay_seconds,
                "audio_silence_prefix_seconds": self.audio_silence_prefix_seconds}


@dataclass(frozen=True)
class Piece:
    """Display text of one visible token (sentencepiece's word mark shown as a space)."""

    text: str
    step: int


Event = Piece | Word | VadEvent


class SttSession:
    """B streams in lockstep; see the module docstring."""

    def __init__(self, lm: Any, codec: Any, tokenizer: Any, stt: SttConfig, batch_size: int = 1,
                 sampler: Any = None, seed: int | None = None) -> None:
        self.codec, self.tokenizer, self.stt = codec, tokenizer, stt
        self.batch_size = batch_size
        self.gen = SttGen(lm, batch_size, sampler=sampler, seed=seed)
        self.codec_state = codec.init_state(batch_size)
        self.frame_size: int = codec.frame_size
        prefix_s = stt.prefix_frames / FRAME_RATE
        self.timers = [WordTimer(tokenizer.decode, lambda w: len(tokenizer.encode(w)),
                                 offset_s=prefix_s + stt.audio_delay_seconds)
                       for _ in range(batch_size)]
        self.vads = [VadTracker(offset_s=prefix_s) for _ in range(batch_size)]
        self.has_vad = len(lm.extra_heads) > VAD_HEAD
        self.audio_frames = 0  # frames of real audio fed (prefix and suffix excluded)
        silence = np.zeros((batch_size, self.frame_size), np.float32)
        for _ in range(stt.prefix_frames):
            self._step(silence)

    @property
    def steps(self) -> int:
        return self.gen.offset

    def _step(self, frames: np.ndarray) -> tuple[SttStep, list[list[Event]]]:
        codes = self.codec.encode_step(frames[:, None, :], self.codec_state)
        out = self.gen.step(codes[:, :, 0])
        events: list[list[Event]] = []
        for b in range(self.batch_size):
            tok = int(out.tokens[b])
            ev: list[Event] = []
            piece = self.tokenizer.piece(tok)
            if piece:
                ev.append(Piece(piece, out.step))
            ev.extend(self.timers[b].push(out.step, tok))
            if self.has_vad:
                v = self.vads[b].push(out.step, out.extra_heads[b], tok)
                if v is not None:
                    ev.append(v)
            events.append(ev)
        return out, events

    def feed(self, frames: np.ndarray) -> list[list[Event]]:
        """frames float32 [B, frame_size] (24 kHz mono) -> the events of each stream."""
        frames = np.asarray(frames, np.float32)
        if frames.shape != (self.batch_size, self.frame_size):
            raise ValueError(f"expected frames [{self.batch_size}, {self.frame_size}], "
                             f"got {frames.shape}")
        self.audio_frames += 1
        return self._step(frames)[1]

    def finish(self) -> list[list[Event]]:
        """Feed the trailing silence and close the last words; the session is then spent."""
        events: list[list[Event]] = [[] for _ in range(self.batch_size)]
        silence = np.zeros((self.batch_size, self.frame_size), np.float32)
        for _ in range(self.stt.suffix_frames):
            for b, ev in enumerate(self._step(silence)[1]):
                events[b].extend(ev)
        for b in range(self.batch_size):
            events[b].extend(self.timers[b].finish(self.steps))
        return events
