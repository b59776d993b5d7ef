"""One conversation at the PCM level: 80 ms of the user's audio in, 80 ms of Moshi's audio out.

Per frame f the work is a chain: Mimi `encode_step` (1920 samples -> 8 codes) -> `LmGen.step` (the
user's codes of frame f -> Moshi's text token of step f and, once the acoustic delay allows, Moshi's
8 codes of one aligned frame) -> Mimi `decode_step` (8 codes -> 1920 samples). No threads, devices
or UI here: the live chat, file mode, the benchmarks and the tests all drive `Conversation.step`
and consume the typed events it returns.

Timing convention (the engine's, PyTorch `LMGen`'s; see moshi_mlx/engine.py): step f reads the
user's frame f at once, so Moshi's text of step f (reported at frame f) and the audio that step f
completes already react to it. The audio of step f is Moshi's aligned frame f-1 (its acoustic
codebooks are sampled at step f); it is *the output of input frame f*: `run` writes it at index f
and `chat` plays it in answer to frame f. Step 0 yields 80 ms of silence, which keeps Moshi's
output exactly as long as the user's input. Latency from the end of the user's frame to Moshi's
reacting audio: encode + LM step + decode (serial schedule), with no whole frame wasted.

Two schedules (`SCHEDULES`), the same tokens and audio, aligned by frame index:
- `serial`: encode f, LM step f, decode f as soon as frame f arrives. Real time needs
  E + L + D < 80 ms.
- `pipelined`: encode f, *issue* LM step f (`LmGen.step` ends with `mx.async_eval`, which on
  Metal returns once the work is queued), then decode the audio of step f-1 on the CPU (an MLX
  CPU stream, or rustymimi) while the accelerator runs the LM, then wait for step f. Real time
  needs only E + max(L, D) < 80 ms, at the cost of one more frame of audio latency: the call for
  frame f returns Moshi's audio of step f-1, and `flush()` returns the last one.
`choose_schedule` picks one from measured warm-up stage times. On MLX's CPU backend the LM step
does not run beside Python work (async_eval blocks while it schedules), so `pipelined` gains
nothing there; `benchmarks/bench_schedule.py` measures the schedules with a stand-in LM step that
holds a simulated accelerator without using the CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

SAMPLE_RATE = 24000
FRAME_SIZE = 1920  # 24000 Hz / 12.5 Hz Mimi frame rate
FRAME_S = FRAME_SIZE / SAMPLE_RATE  # 0.08 s
BUDGET_MS = FRAME_S * 1e3  # a frame must be processed in the time it lasts
SCHEDULES = ("serial", "pipelined")
SERIAL_MARGIN = 0.8  # serial only while E + L + D stays under 80% of the budget (jitter headroom)


class StepResult(Protocol):
    text: Any  # [B] token ids (array-like; converting it waits for the step)
    audio: Any  # [B, dep_q] codes, or None during the acoustic delay


class Generator(Protocol):
    """What `Conversation` needs of `engine.LmGen` (benchmarks substitute a stand-in)."""

    def step(self, user_codes: Any) -> StepResult: ...

    def reset(self) -> None: ...


class Codec(Protocol):
    """What `Conversation` needs of `codec.MimiCodec` / `codec.RustyMimiCodec`."""

    backend: str
    frame_size: int

    def init_state(self, batch_size: int = 1) -> Any: ...

    def encode_step(self, frame: Any, state: Any) -> np.ndarray: ...

    def decode_step(self, codes: Any, state: Any) -> np.ndarray: ...


class Pieces(Protocol):
    def piece(self, token: int) -> str: ...


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
    """Moshi's 1920 output samples for input frame `frame` (silence before the first generated one)."""

    frame: int
    pcm: np.ndarray  # float32 [1920]
    generated: bool  # False while the acoustic delay still holds Moshi's first frame


@dataclass(frozen=True)
class FrameTiming:
    """Wall-clock cost of one step, in milliseconds. `total_ms` is the whole call; in the pipelined
    schedule `decode_ms` runs while the LM step is in flight, so total < encode + lm + decode."""

    frame: int
    encode_ms: float
    lm_ms: float
    decode_ms: float
    total_ms: float

    @property
    def serial_ms(self) -> float:
        return self.encode_ms + self.lm_ms + self.decode_ms


Event = TextPiece | AudioFrame | FrameTiming


@dataclass(frozen=True)
class ScheduleChoice:
    schedule: str
    reason: str


def choose_schedule(timings: list[FrameTiming], budget_ms: float = BUDGET_MS) -> ScheduleChoice:
    """`serial` when the median warm-up frame's E + L + D leaves a safe margin, else `pipelined`.

    `timings`: warm-up frames without the first (which compiles). Serial has the lowest latency, so
    it wins whenever it keeps real time with headroom; pipelined hides the decode behind the LM.
    """
    if not timings:
        return ScheduleChoice("serial", "no warm-up timings")
    med = {k: float(np.median([getattr(t, k) for t in timings]))
           for k in ("encode_ms", "lm_ms", "decode_ms")}
    serial = med["encode_ms"] + med["lm_ms"] + med["decode_ms"]
    overlap = med["encode_ms"] + max(med["lm_ms"], med["decode_ms"])
    if serial <= SERIAL_MARGIN * budget_ms:
        return ScheduleChoice("serial", f"E+L+D {serial:.0f} ms fits {budget_ms:.0f} ms")
    return ScheduleChoice("pipelined", f"E+L+D {serial:.0f} ms is too close to {budget_ms:.0f} ms;"
                                       f" E+max(L,D) {overlap:.0f} ms")


def _collect(out: StepResult) -> tuple[int, np.ndarray | None]:
    """Wait for a step's results (the np conversion is the sync point)."""
    token = int(np.asarray(out.text).reshape(-1)[0])
    return token, None if out.audio is None else np.asarray(out.audio)


class Conversation:
    """Drives Mimi + LmGen one frame at a time; owns the codec streaming state."""

    def __init__(self, lm_gen: Generator, mimi: Codec, tokenizer: Pieces,
                 schedule: str = "serial") -> None:
        self.lm_gen = lm_gen
        self.mimi = mimi
        self.tokenizer = tokenizer
        self.frame_size = int(mimi.frame_size)
        self.frame = 0
        self._schedule = "serial"
        self.schedule = schedule
        self.reset()

    @property
    def schedule(self) -> str:
        return self._schedule

    @schedule.setter
    def schedule(self, value: str) -> None:
        if value not in SCHEDULES:
            raise ValueError(f"unknown schedule {value!r}; choose one of {SCHEDULES}")
        if self.frame and value != self._schedule:
            raise ValueError("the schedule can only change between conversations (after reset())")
        self._schedule = value

    def reset(self) -> None:
        """Fresh codec state and generation state: a new conversation."""
        self.state = self.mimi.init_state(1)
        self.lm_gen.reset()
        self.frame = 0
        self.last_audio_codes: np.ndarray | None = None
        # Pipelined: (input frame, Moshi's codes or None) of the last step, not decoded yet.
        self._held: tuple[int, np.ndarray | None] | None = None

    def _decode(self, codes: np.ndarray | None) -> np.ndarray:
        if codes is None:
            return np.zeros(self.frame_size, np.float32)
        with self._decode_place():
            pcm = self.mimi.decode_step(codes.reshape(1, -1, 1).astype(np.int32), self.state)
        return np.asarray(pcm).reshape(-1).astype(np.float32)

    def _decode_place(self) -> contextlib.AbstractContextManager:
        """Pipelined MLX Mimi: decode on a CPU stream, so it runs beside the LM on the GPU."""
        if self._schedule != "pipelined" or self.mimi.backend != "mlx":
            return contextlib.nullcontext()
        import mlx.core as mx

        if mx.default_device() == mx.cpu:
            return contextlib.nullcontext()
        return mx.stream(mx.cpu)

    def step(self, pcm: np.ndarray) -> list[Event]:
        """Feed one frame of user audio (float32 [1920], 24 kHz); returns this step's events."""
        import mlx.core as mx

        pcm = np.asarray(pcm, np.float32).reshape(1, 1, -1)
        if pcm.shape[-1] != self.frame_size:
            raise ValueError(f"expected {self.frame_size} samples per frame, got {pcm.shape[-1]}")
        t0 = time.perf_counter()
        codes = np.asarray(self.mimi.encode_step(pcm, self.state))
        codes = mx.array(codes[:, :, 0].astype(np.int32))  # [B=1, K=8]
        t1 = time.perf_counter()
        out = self.lm_gen.step(codes)  # issued; converting its outputs waits for it
        f = self.frame
        events: list[Event] = []
        if self._schedule == "serial":
            token, audio = _collect(out)
            t2 = t3 = time.perf_counter()
            pcm_out = self._decode(audio)
            t4 = time.perf_counter()
            audio_events = [AudioFrame(f, pcm_out, audio is not None)]
            lm_ms, decode_ms = (t2 - t1) * 1e3, (t4 - t3) * 1e3
        else:
            t2 = time.perf_counter()
            audio_events = self._decode_held()  # the CPU works while the LM step runs
            t3 = time.perf_counter()
            token, audio = _collect(out)
            t4 = time.perf_counter()
            self._held = (f, audio)
            lm_ms, decode_ms = ((t2 - t1) + (t4 - t3)) * 1e3, (t3 - t2) * 1e3
        self.last_audio_codes = audio  # Moshi's 8 codes of this step (None during the delay)
        text = self.tokenizer.piece(token)
        if text:
            events.append(TextPiece(f, token, text))
        events += audio_events
        events.append(FrameTiming(f, (t1 - t0) * 1e3, lm_ms, decode_ms, (t4 - t0) * 1e3))
        self.frame += 1
        return events

    def _decode_held(self) -> list[Event]:
        if self._held is None:
            return []
        f, codes = self._held
        self._held = None
        return [AudioFrame(f, self._decode(codes), codes is not None)]

    def flush(self) -> list[Event]:
        """Decode what the pipelined schedule still holds (the last step's audio); [] if serial."""
        return self._decode_held()

    def warmup(self, frames: int = 4) -> list[FrameTiming]:
        """Run a few silent frames, then start over (compiles kernels, fills allocator pools).
        Returns each warm-up frame's timing (the first includes compilation)."""
        silence = np.zeros(self.frame_size, np.float32)
        times: list[FrameTiming] = []
        for _ in range(frames):
            times += [e for e in self.step(silence) if isinstance(e, FrameTiming)]
        self.flush()
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
