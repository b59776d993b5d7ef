"""ui/terminal.py rendered into captured consoles; the text is asserted."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from moshi_mlx.conversation import AudioFrame, FrameTiming, TextPiece
from moshi_mlx.ui.terminal import PlainUI, RichUI, Status, make_ui, meter, status_text

WORDS = ("Hello there, I am Moshi. How are you doing today? I can talk and listen at the same "
         "time, which is rather nice.").split(" ")


def events_for(words):
    out = []
    for i, w in enumerate(words):
        out.append([TextPiece(i, 100 + i, " " + w), AudioFrame(i, np.zeros(1920, np.float32), True),
                    FrameTiming(i, 10.0, 40.0, 12.0, 62.0)])
    return out


def captured_terminal(width: int) -> tuple[io.StringIO, Console]:
    """A rich console that believes it is a colourless terminal of `width` columns."""
    buf = io.StringIO()
    return buf, Console(file=buf, width=width, force_terminal=True, color_system=None)


def status(**kw):
    base = dict(model="moshiko", precision="q4", p50_ms=62.4, p95_ms=91.2, lag_frames=2,
                in_level=0.1, out_level=0.001, elapsed_s=75.0)
    base.update(kw)
    return Status(**base)


def test_status_line_fits_80_columns_and_says_everything():
    st = status(late_frames=3, lost_frames=1)
    line = status_text(st).plain
    assert len(line) <= 80, line
    assert line.startswith("moshiko q4 | 62/91ms of 80 | lag 160ms")
    assert "in ###. out ...." in line and "late 3 lost 1" in line and line.endswith("1:15")
    assert meter(1.0) == "####" and meter(0.0) == "...."


def test_status_line_shows_schedule_buffer_and_echo():
    line = status_text(status(schedule="pipelined", buffer_ms=240.0, echo_db=31.4,
                              late_frames=2)).plain
    assert len(line) <= 80, line
    assert line.startswith("moshiko q4 | 62/91ms of 80 pipe | buf 240ms | aec -31dB")
    assert "late 2 lost 0" in line and line.endswith("1:15")
    serial = status_text(status(schedule="serial", buffer_ms=80.0)).plain
    assert "62/91ms of 80 ser | buf 80ms" in serial
    # A pile-up shows the lag on both sides instead, whatever the schedule.
    assert "lag 1.6s" in status_text(status(schedule="serial", lag_frames=20)).plain


def test_status_colour_tracks_the_budget():
    ok = status_text(status(p50_ms=40, p95_ms=60)).spans[1].style
    slow = status_text(status(p50_ms=95, p95_ms=120)).spans[1].style
    assert (ok, slow) == ("green", "red")


def test_rich_ui_renders_streamed_text_at_80_columns():
    buf, console = captured_terminal(80)
    ui = RichUI(console, lines=1)
    for evs in events_for(WORDS):
        ui.on_events(evs)
    ui.set_status(status())
    console.print(ui.renderable())
    out = buf.getvalue()
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "Moshi" in lines[0] and "rather nice." in out
    assert "Hello there" not in out  # only the last wrapped line is shown
    assert lines[-1].startswith("moshiko q4 | 62/91ms of 80")


def test_rich_live_session_writes_to_console():
    buf, console = captured_terminal(80)
    with make_ui(console) as ui:
        assert isinstance(ui, RichUI)
        ui.warn("Use headphones")
        for evs in events_for(WORDS[:5]):
            ui.on_events(evs)
        ui.set_status(status(elapsed_s=3))
    out = buf.getvalue()
    assert "Use headphones" in out and "I am Moshi." in out and "0:03" in out


def test_plain_ui_when_not_a_tty():
    buf = io.StringIO()
    console = Console(file=buf, width=80)  # a StringIO is not a terminal
    ui = make_ui(console)
    assert isinstance(ui, PlainUI)
    with ui:
        ui.warn("Use headphones")
        for i, evs in enumerate(events_for(WORDS)):
            ui.on_events(evs)
            ui.set_status(status(elapsed_s=float(i)))
    lines = buf.getvalue().splitlines()
    assert lines[0] == "warning: Use headphones"
    text_lines = [ln for ln in lines if ln.startswith("moshi: ")]
    assert all(len(ln) <= 78 for ln in lines)
    assert " ".join(ln[len("moshi: "):] for ln in text_lines) == " ".join(WORDS)
    assert len(text_lines) >= 2
    status_lines = [ln for ln in lines if ln.startswith("status: ")]
    # every 5 s of elapsed time (t = 0, 5, ...), plus a final one
    assert len(status_lines) == len(range(0, len(WORDS), 5)) + 1 and "\x1b" not in buf.getvalue()
    assert status_lines[-1].endswith(f"0:{len(WORDS) - 1:02d}")


def test_rich_ui_wraps_only_the_recent_text(monkeypatch):
    """An hour of text costs a refresh no more than a minute of it (the whole text used to be
    re-wrapped ~16 times a second on the UI thread, competing with the model for the GIL), and the
    lines shown are still exactly the last lines of the whole text wrapped."""
    import textwrap

    from moshi_mlx.ui import terminal

    wrapped_chars = []
    real_wrap = textwrap.wrap
    monkeypatch.setattr(terminal.textwrap, "wrap",
                        lambda text, width: wrapped_chars.append(len(text)) or real_wrap(text, width))
    rng = np.random.default_rng(0)
    buf, console = captured_terminal(80)
    ui = RichUI(console, lines=4)
    pieces = [str(rng.choice(WORDS))[: int(rng.integers(1, 6))] + " " * int(rng.random() < 0.4)
              for _ in range(20000)]
    for i, piece in enumerate(pieces):
        ui.on_events([TextPiece(i, 100, piece)])
        if i % 7 == 0:
            ui.renderable()
    assert len(ui.text) > 40000 and max(wrapped_chars[1:]) < 200
    console.print(ui.renderable())
    shown = [line[2:-1].rstrip() for line in buf.getvalue().splitlines() if line.startswith("│")]
    assert shown == real_wrap("".join(pieces).strip(), 76)[-4:]


def test_rich_ui_status_stays_one_line_in_a_narrow_terminal():
    """At 60 columns the status line drops what does not fit instead of wrapping its tail."""
    buf, console = captured_terminal(60)
    ui = RichUI(console, lines=2)
    for evs in events_for(WORDS):
        ui.on_events(evs)
    ui.set_status(status(late_frames=3, lost_frames=1))
    console.print(ui.renderable())
    last = buf.getvalue().splitlines()[-1]
    assert last.startswith("moshiko q4 | 62/91ms of 80") and len(last) <= 60, last
