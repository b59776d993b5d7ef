"""Terminal display of `cli.py speak`: the text with the word being heard highlighted, a status line.

`make_speak_ui(console, plain)` picks `RichSpeakUI` on a terminal, `PlainSpeakUI` otherwise.
Both take the run's events (`on_word`, `on_entry`, `set_end`) from the generation loop and read
progress through a `progress()` callable (a `SpeakProgress` snapshot) that the CLI builds from
its counters; neither knows about the model or the sound device.

- Playing: the word highlighted is the one audible now (`moshi_mlx.tts.timing`: output frames
  written, minus those queued in the output buffer, minus the device latency), words already
  heard are dimmed, words the model has chosen but not yet played are plain, words it has not
  reached yet (known when the whole text is given) are italic. The status line shows the audio
  generated and played, the real-time factor, the buffer depth and late/lost frames.
- Writing a file: the words the model has started are plain, the others italic; the status
  line shows words started of the total, audio seconds and the real-time factor.

The rich view redraws from its own refresh thread (rich `Live`) a few times a second, so the
highlight follows playback also while the model waits for the sound card and while the buffer
drains at the end. Plain output (pipes, logs, `--plain`): the words as the model starts them,
then a newline; the CLI prints its summary line after.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TextIO

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from ..tts.timing import FRAME_MS, Timeline, heard_position, word_at, words_spoken
from .terminal import format_elapsed, join_parts

SPOKEN, CURRENT, PENDING, UNREAD = "dim", "bold reverse", "", "italic"
WINDOW_WORDS = 80  # words shown before and after the current one (long texts)


@dataclass(frozen=True)
class SpeakProgress:
    """A snapshot of the run's counters; `queued` is None when writing a file (no playback)."""

    frames: int = 0  # output frames generated (80 ms each)
    elapsed_s: float = 0.0
    waited_s: float = 0.0  # time generation waited for the sound card (backpressure)
    queued: int | None = None  # frames in the output buffer
    latency_ms: float = 0.0  # the device's output latency
    late: int = 0
    lost: int = 0
    finished: bool = False  # the run is over (the audio played out, or the file is written)

    @property
    def audio_s(self) -> float:
        return self.frames * FRAME_MS / 1e3

    @property
    def rtf(self) -> float | None:
        """Compute time per second of audio (time spent waiting for the sound card excluded)."""
        return (self.elapsed_s - self.waited_s) / self.audio_s if self.frames else None

    @property
    def position(self) -> float:
        """The output frame heard now (`heard_position`); generated so far when not playing
        or when the run is over."""
        if self.queued is None or self.finished:
            return float(self.frames)
        return heard_position(self.frames, self.queued, self.latency_ms)


def speak_status_text(p: SpeakProgress, words: int, total: int | None, width: int = 80) -> Text:
    """One line of at most `width` columns (see the module docstring)."""
    rtf = f"RTF {p.rtf:.2f}" if p.rtf is not None else "RTF -"
    if p.queued is None:
        parts = [(f"words {words}/{total}" if total is not None else f"words {words}", ""),
                 (f"audio {p.audio_s:.1f}s", "bold cyan"), (rtf, "")]
    else:
        played = max(0.0, p.position) * FRAME_MS / 1e3
        parts = [(f"audio {p.audio_s:.1f}s made {played:.1f}s played", "bold cyan"), (rtf, ""),
                 (f"buf {p.queued * FRAME_MS:.0f}ms", "")]
        if p.late or p.lost:
            parts.append((f"late {p.late} lost {p.lost}", "yellow"))
    parts.append((format_elapsed(p.elapsed_s), ""))
    return join_parts(parts, width)


class SpeakUI:
    """Shared state: the timeline of the words the model started, the text's words if known."""

    def __init__(self, progress: Callable[[], SpeakProgress],
                 words: Sequence[str] | None = None) -> None:
        self.progress = progress
        self.timeline = Timeline()
        self.known = list(words) if words is not None else None
        self.done = False  # the audio is over: every word has been heard

    def snapshot(self) -> SpeakProgress:
        """The progress now, marked finished once `stop(done=True)` was called."""
        p = self.progress()
        return replace(p, finished=True) if self.done else p

    def on_word(self, word: str, step: int) -> None:
        self.timeline.add_word(word, step)

    def on_entry(self, step: int) -> None:
        self.timeline.add_entry(step)

    def set_end(self, end_step: int | None) -> None:
        self.timeline.end_step = end_step

    def start(self) -> None: ...

    def stop(self, done: bool = True) -> None:
        self.done = done

    def __enter__(self) -> SpeakUI:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(done=exc[0] is None)


def words_text(ui: SpeakUI, p: SpeakProgress) -> Text:
    """The text, styled by what was heard, is being heard, was generated, is still to come."""
    started = [w for w, _ in list(ui.timeline.words)]
    words = started + (ui.known[len(started):] if ui.known is not None else [])
    playing = p.queued is not None and not p.finished
    current = word_at(ui.timeline, p.position) if playing else None
    spoken = (words_spoken(ui.timeline, p.position) if playing
              else len(started) if p.finished and p.queued is not None else 0)
    anchor = current if current is not None else max(spoken, len(started) - 1, 0)
    lo, hi = max(0, anchor - WINDOW_WORDS), anchor + WINDOW_WORDS
    t = Text("… " if lo else "")
    for i in range(lo, min(hi, len(words))):
        style = (CURRENT if i == current else SPOKEN if i < spoken
                 else PENDING if i < len(started) else UNREAD)
        t.append(words[i], style=style)
        t.append(" ")
    if hi < len(words):
        t.append("…")
    t.rstrip()
    return t


class RichSpeakUI(SpeakUI):
    """A live panel with the text above a status line, redrawn `refresh_per_second` times."""

    def __init__(self, console: Console, progress: Callable[[], SpeakProgress],
                 words: Sequence[str] | None = None, refresh_per_second: float = 4,
                 title: str = "speak") -> None:
        super().__init__(progress, words)
        self.console = console
        self.refresh_per_second = refresh_per_second
        self.title = title
        self._live: Any = None

    def renderable(self) -> Group:
        p = self.snapshot()
        width = min(self.console.width, 100)
        panel = Panel(words_text(self, p), title=self.title, title_align="left", width=width)
        status = speak_status_text(p, len(self.timeline.words),
                                   len(self.known) if self.known is not None else None,
                                   min(self.console.width, 80))
        return Group(panel, status)

    def start(self) -> None:
        from rich.live import Live

        self._live = Live(get_renderable=self.renderable, console=self.console,
                          refresh_per_second=self.refresh_per_second, transient=False)
        self._live.start()

    def stop(self, done: bool = True) -> None:
        super().stop(done)
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None


class PlainSpeakUI(SpeakUI):
    """The words as the model starts them, on one line, then a newline at the end."""

    def __init__(self, progress: Callable[[], SpeakProgress], words: Sequence[str] | None = None,
                 out: TextIO | None = None) -> None:
        super().__init__(progress, words)
        self.out = out

    def on_word(self, word: str, step: int) -> None:
        super().on_word(word, step)
        out = self.out or sys.stdout  # looked up late: tests swap sys.stdout
        out.write(word + " ")
        out.flush()

    def stop(self, done: bool = True) -> None:
        super().stop(done)
        out = self.out or sys.stdout
        out.write("\n")
        out.flush()


def make_speak_ui(progress: Callable[[], SpeakProgress], words: Sequence[str] | None = None,
                  console: Console | None = None, plain: bool | None = None) -> SpeakUI:
    """RichSpeakUI on a terminal, PlainSpeakUI otherwise (or when `plain` is forced)."""
    console = console or Console()
    if plain is None:
        plain = not console.is_terminal
    return PlainSpeakUI(progress, words) if plain else RichSpeakUI(console, progress, words)
