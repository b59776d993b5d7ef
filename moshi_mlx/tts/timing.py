"""When each word of a TTS run is heard: generation steps -> output audio frames -> the listener.

Pure functions (no clock, no device), so the terminal display's highlighting is tested by value.

- The text leads the audio. PyTorch moshi documents a transcript entry `(word, step)` as the
  word's time stamp in the generated audio, `step / 12.5` seconds: the word that entered the
  model at step s starts in output frame s (80 ms, 1920 samples at 24 kHz) of `speak`'s audio.
- `speak` produces output frame k at generation step k + `lag_steps` (`delay_steps`, then the
  codebooks' acoustic delay, then the `DROPPED_FRAMES` decoded frames that are thrown away): the
  word started at step s comes out of the model about `lag_steps` steps after it was chosen.
- Playback: of the `written` frames handed to the output buffer, `queued` still wait there; the
  one the sound card took last reaches the ear after the device's output latency. So the frame
  being heard is `written - queued - 1 - latency / 80 ms` (`heard_position`).
- A word is audible from its start to the start of the next entry (a word, or a `<break>`
  during which nothing is said), the last one until `end_step`, where the audio ends.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ..conversation import FRAME_S

FRAME_MS = FRAME_S * 1e3  # one output frame (1920 samples at 24 kHz)


def lag_steps(delay_steps: int, max_delay: int, dropped_frames: int) -> int:
    """Generation steps between a word entering the model and its first audio frame leaving
    `speak` (see the module docstring)."""
    return delay_steps + max_delay + dropped_frames


def heard_position(written: int, queued: int, output_latency_ms: float = 0.0) -> float:
    """The output frame (fractional) the listener hears now: frames written to the output buffer,
    minus those still queued, minus the one just handed to the device, minus its latency.
    Negative: nothing heard yet."""
    return written - queued - 1 - output_latency_ms / FRAME_MS


@dataclass
class Timeline:
    """The words of a run with their start steps, the start steps of every entry (words and
    breaks, ascending) and the end of the text (None while unknown). Append-only while the
    model runs; the lists may be read from another thread."""

    words: list[tuple[str, int]] = field(default_factory=list)
    entries: list[int] = field(default_factory=list)
    end_step: int | None = None

    def add_word(self, word: str, step: int) -> None:
        self.words.append((word, step))
        if not self.entries or self.entries[-1] != step:
            self.entries.append(step)

    def add_entry(self, step: int) -> None:
        if not self.entries or self.entries[-1] != step:
            self.entries.append(step)


def word_at(timeline: Timeline, position: float) -> int | None:
    """Index of the word audible at output frame `position`; None before the first word, in a
    break, and from `end_step` on."""
    words, entries, end = list(timeline.words), list(timeline.entries), timeline.end_step
    if not words or position < words[0][1] or (end is not None and position >= end):
        return None
    i = bisect.bisect_right([s for _, s in words], position) - 1
    start = words[i][1]
    # The next entry after this word's start ends it (a following word, or a break).
    j = bisect.bisect_right(entries, start)
    if j < len(entries) and position >= entries[j]:
        return None  # a break after the word (a following word would have been found above)
    return i


def words_spoken(timeline: Timeline, position: float) -> int:
    """How many words are over at `position` (all of them from `end_step` on)."""
    words, end = list(timeline.words), timeline.end_step
    if end is not None and position >= end:
        return len(words)
    current = word_at(timeline, position)
    if current is not None:
        return current
    return bisect.bisect_right([s for _, s in words], position)

