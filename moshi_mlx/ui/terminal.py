"""Terminal rendering of a conversation: Moshi's text as it streams, and a one-line status.

`make_ui(console)` picks `RichUI` (live-updating panel + status line, for a TTY) or `PlainUI` (plain
lines, for pipes and logs). Both consume the typed events of `moshi_mlx.conversation` and a `Status`
snapshot; neither knows about devices or models. Everything is laid out for 80 columns.
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
from collections import deque
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from ..conversation import BUDGET_MS, Event, TextPiece

_WHITESPACE = re.compile(r"\s")  # textwrap turns each whitespace character into one space


@dataclass(frozen=True)
class Status:
    """What the status line shows; built by the app from its counters once per refresh."""

    model: str = ""
    precision: str = ""
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    lag_frames: int = 0
    in_level: float = 0.0  # RMS, linear
    out_level: float = 0.0
    elapsed_s: float = 0.0
    late_frames: int = 0
    lost_frames: int = 0
    schedule: str = ""  # serial / pipelined (the frame loop's schedule)
    buffer_ms: float = 0.0  # latency the output jitter buffer adds now
    echo_db: float | None = None  # echo removed by the canceller, when one runs


def db(level: float) -> float:
    return 20 * math.log10(level) if level > 1e-5 else -100.0


def meter(level: float, width: int = 4) -> str:
    """A small level bar: -60 dBFS empty .. 0 dBFS full."""
    frac = min(max((db(level) + 60) / 60, 0.0), 1.0)
    full = int(round(frac * width))
    return "#" * full + "." * (width - full)


def format_elapsed(s: float) -> str:
    m, sec = divmod(int(s), 60)
    return f"{m}:{sec:02d}"


def status_text(st: Status, width: int = 80) -> Text:
    """One line of at most `width` columns: model, frame time p50/p95 vs the 80 ms budget and the
    schedule, output buffer latency (or the lag when frames pile up), echo removed,
    input/output levels, late/lost frames, elapsed. Levels are dropped first if it does not fit."""
    speed = "green" if st.p95_ms <= BUDGET_MS else ("yellow" if st.p50_ms <= BUDGET_MS else "red")
    lag_ms = st.lag_frames * 80
    if lag_ms >= 1000:
        lag = f"lag {lag_ms / 1000:.1f}s"
    else:
        lag = f"buf {st.buffer_ms:.0f}ms" if st.schedule else f"lag {lag_ms}ms"
    sched = {"serial": " ser", "pipelined": " pipe"}.get(st.schedule, "")
    parts = [
        (f"{st.model} {st.precision}".strip()[:16], "bold cyan"),
        (f"{st.p50_ms:.0f}/{st.p95_ms:.0f}ms of {BUDGET_MS:.0f}{sched}", speed),
        (lag, "red" if st.lag_frames > 3 else ""),
        (f"in {meter(st.in_level)} out {meter(st.out_level)}", ""),
    ]
    if st.echo_db is not None:
        parts.insert(3, (f"aec -{st.echo_db:.0f}dB", ""))
    if st.late_frames or st.lost_frames:
        parts.append((f"late {st.late_frames} lost {st.lost_frames}", "yellow"))
    parts.append((format_elapsed(st.elapsed_s), ""))
    if sum(len(p) for p, _ in parts) + 3 * (len(parts) - 1) > width:
        parts = [p for p in parts if not p[0].startswith("in ")]
    return join_parts(parts, width)


def join_parts(parts: list[tuple[str, str]], width: int) -> Text:
    """`(text, style)` fields joined by " | " on one line, cut at `width` columns (the chat's
    and the speak command's status lines look alike)."""
    t = Text()
    for i, (text, style) in enumerate(parts):
        if i:
            t.append(" | ")
        t.append(text, style=style)
    t.truncate(width)
    return t


class BaseUI:
    """Interface shared by the rich and plain front ends."""

    def __init__(self) -> None:
        self.text = ""
        self.status = Status()

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def on_events(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, TextPiece):
                self.on_text(ev.text)

    def on_text(self, piece: str) -> None:
        self.text += piece

    def set_status(self, status: Status) -> None:
        self.status = status

    def info(self, msg: str) -> None: ...

    def warn(self, msg: str) -> None: ...

    def __enter__(self) -> BaseUI:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RichUI(BaseUI):
    """A live panel with the last lines of Moshi's text above a status line."""

    def __init__(self, console: Console, lines: int = 8, refresh_per_second: float = 8) -> None:
        super().__init__()
        self.console = console
        self.lines = lines
        self.refresh_per_second = refresh_per_second
        self._live: Any = None
        # Incremental wrapping, so a refresh costs the same at minute 1 and at minute 60: greedy
        # wrapping never changes a line once a later word has gone to the next one, so only the
        # text after the last finished line (`_open`) is re-wrapped.
        self._done: deque[str] = deque(maxlen=lines)
        self._open = ""
        self._width = 0

    def on_text(self, piece: str) -> None:
        super().on_text(piece)
        self._open += _WHITESPACE.sub(" ", piece)

    def wrapped_lines(self, width: int) -> list[str]:
        """The last `lines` lines of Moshi's text wrapped at `width` (as `textwrap.wrap`)."""
        if width != self._width:  # first call or terminal resized: re-wrap the recent text
            self._width = width
            self._done.clear()
            self._open = _WHITESPACE.sub(" ", self.text[-(self.lines + 1) * width * 2:])
        wrapped = textwrap.wrap(self._open.strip(), width)
        if len(wrapped) > 1:
            self._done.extend(wrapped[:-1])
            self._open = self._open[self._open.rfind(wrapped[-1]):]
        return (list(self._done) + wrapped[-1:])[-self.lines:]

    def renderable(self) -> Group:
        width = min(self.console.width, 100) - 4  # panel borders and padding
        body = "\n".join(self.wrapped_lines(max(width, 20)))
        panel = Panel(Text(body), title="Moshi", title_align="left", width=width + 4)
        return Group(panel, status_text(self.status, min(self.console.width, 80)))

    def start(self) -> None:
        from rich.live import Live

        self._live = Live(self.renderable(), console=self.console, auto_refresh=False,
                          transient=False)
        self._live.start()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.renderable(), refresh=True)

    def on_events(self, events: list[Event]) -> None:
        super().on_events(events)
        if any(isinstance(e, TextPiece) for e in events):
            self._refresh()

    def set_status(self, status: Status) -> None:
        super().set_status(status)
        self._refresh()

    def stop(self) -> None:
        if self._live is not None:
            self._refresh()
            self._live.stop()
            self._live = None

    def info(self, msg: str) -> None:
        self.console.print(Text(msg, style="dim"))

    def warn(self, msg: str) -> None:
        self.console.print(Text(msg, style="bold yellow"))


class PlainUI(BaseUI):
    """Plain lines for a pipe: `moshi: ...` text lines at word boundaries, periodic status lines."""

    def __init__(self, out: TextIO | None = None, width: int = 78, status_every_s: float = 5.0):
        super().__init__()
        self.out = out or sys.stdout
        self.width = width
        self.status_every_s = status_every_s
        self._pending = ""
        self._last_status = -1e9

    def _emit(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def on_text(self, piece: str) -> None:
        super().on_text(piece)
        self._pending += piece
        prefix = "moshi: "
        limit = self.width - len(prefix)
        while len(self._pending.strip()) > limit:
            s = self._pending.strip()
            cut = s.rfind(" ", 0, limit + 1)
            if cut <= 0:
                cut = s.find(" ")
                if cut <= 0:
                    break  # one very long word: wait for its end
            self._emit(prefix + s[:cut])
            self._pending = s[cut:]

    def set_status(self, status: Status) -> None:
        super().set_status(status)
        if status.elapsed_s - self._last_status >= self.status_every_s:
            self._last_status = status.elapsed_s
            self._emit("status: " + status_text(status).plain)

    def stop(self) -> None:
        if self._pending.strip():
            self._emit("moshi: " + self._pending.strip())
        self._pending = ""
        self._emit("status: " + status_text(self.status).plain)

    def info(self, msg: str) -> None:
        self._emit(msg)

    def warn(self, msg: str) -> None:
        self._emit("warning: " + msg)


def make_ui(console: Console | None = None, plain: bool | None = None) -> BaseUI:
    """RichUI on a terminal, PlainUI otherwise (or when `plain` is forced)."""
    console = console or Console()
    if plain is None:
        plain = not console.is_terminal
    return PlainUI(console.file) if plain else RichUI(console)
