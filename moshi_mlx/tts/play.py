"""Playing speech as it is generated (`cli.py speak` without `--output`), through the live path.

The chat's `LiveAudio` (output stream only) plays the frames. Its jitter buffer is built for a
model that runs at real time: it drops frames past a hard cap and brings an excess backlog down
by skipping quiet frames or playing faster. A TTS model usually runs faster than real time, so
here the model side waits instead (backpressure): a frame is queued only once the buffer holds
fewer blocks than its target depth, so the backlog never counts as excess and nothing is dropped,
skipped or sped up. The target starts at `PLAY_AHEAD_FRAMES` (a cushion against the bursts in
which sound servers consume audio) and grows after underruns as in chat. At the end the buffer
is flushed (`JitterBuffer.finish`) and drained, with a bounded wait, before the stream closes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..audio.live import AudioDeviceError, LiveAudio

PLAY_AHEAD_FRAMES = 5  # 400 ms queued ahead of the sound card
POLL_S = 0.01
STALL_S = 5.0  # the device consumed nothing for this long: it stopped (unplugged, suspended)


class SpeakerOutput:
    """`write(pcm)` blocks while the output buffer is full; `close()` waits for it to drain."""

    def __init__(self, output_device: str | int | None = None,
                 ahead_frames: int = PLAY_AHEAD_FRAMES, audio: Any = None) -> None:
        self.audio = audio if audio is not None else LiveAudio(
            output_device=output_device, jitter_frames=ahead_frames, input=False)
        self.frames = 0
        self.waited_s = 0.0  # time the model spent waiting for the sound card

    def start(self) -> None:
        self.audio.start()

    def _wait(self, done: Any, limit_s: float) -> bool:
        """Sleep until `done()`, or False after `limit_s` without the buffer getting shorter."""
        jitter = self.audio.jitter
        depth, since = jitter.depth, time.monotonic()
        while not done():
            time.sleep(POLL_S)
            if jitter.depth < depth:
                depth, since = jitter.depth, time.monotonic()
            elif time.monotonic() - since > limit_s:
                return False
        return True

    def write(self, pcm: np.ndarray) -> None:
        """Queue one 24 kHz frame, first waiting until the buffer is below its target depth."""
        jitter = self.audio.jitter
        t0 = time.monotonic()
        if not self._wait(lambda: jitter.depth < jitter.target, STALL_S):
            raise AudioDeviceError("the sound device stopped playing")
        self.waited_s += time.monotonic() - t0
        self.audio.write_frame(pcm)
        self.frames += 1

    def close(self, drain: bool = True) -> None:
        """Play out what is queued (bounded wait, plus the device's own latency), then stop."""
        try:
            if drain:
                self.audio.jitter.finish()
                if self._wait(lambda: self.audio.jitter.depth == 0, STALL_S):
                    time.sleep(self.audio.output_latency_ms / 1e3 + 0.1)
        finally:
            self.audio.stop()
