"""ui/speech.py: the word highlighted for given playback counters, the status line, live and plain
sessions rendered into captured consoles; the text and its styles are asserted."""

from __future__ import annotations

import io

from rich.console import Console
from rich.text import Text

from moshi_mlx.ui.speech import (
    CURRENT,
    PENDING,
    SPOKEN,
    UNREAD,
    PlainSpeakUI,
    RichSpeakUI,
    SpeakProgress,
    make_speak_ui,
    speak_status_text,
    words_text,
)

TEXT = "Hello there my friend, how are you?".split()
STEPS = [2, 8, 15, 20, 26]  # the model has started the first five words


def styled(text: Text) -> dict[str, list[str]]:
    """Words by style: CURRENT, SPOKEN, PENDING (no span), UNREAD."""
    out: dict[str, list[str]] = {CURRENT: [], SPOKEN: [], PENDING: [], UNREAD: []}
    pos = 0
    for word in text.plain.split(" "):
        start = text.plain.index(word, pos)
        pos = start + len(word)
        styles = {str(s.style) for s in text.spans if s.start <= start < s.end}
        out[styles.pop() if styles else PENDING].append(word)
    return out


def ui_with(progress: SpeakProgress, console: Console | None = None):
    """A display of TEXT whose first five words the model started at STEPS."""
    ui = (RichSpeakUI(console, lambda: progress, TEXT) if console is not None
          else PlainSpeakUI(lambda: progress, TEXT, out=io.StringIO()))
    for w, s in zip(TEXT, STEPS, strict=False):
        ui.on_entry(s)
        ui.on_word(w, s)
    return ui


def playing(frames: int, queued: int, latency_ms: float = 80.0, **kw) -> SpeakProgress:
    return SpeakProgress(frames=frames, elapsed_s=2.0, waited_s=1.28, queued=queued,
                         latency_ms=latency_ms, **kw)


def test_the_word_heard_now_is_highlighted():
    # 18 frames written, 3 queued, 1 just taken, 80 ms in the device: frame 13 is heard.
    ui = ui_with(playing(18, 3))
    words = styled(words_text(ui, ui.progress()))
    assert words == {CURRENT: ["there"], SPOKEN: ["Hello"], PENDING: ["my", "friend,", "how"],
                     UNREAD: ["are", "you?"]}


def test_the_highlight_moves_with_playback_and_the_buffer():
    expected = {1: [], 5: ["Hello"], 8: ["there"], 16: ["my"], 19: ["my"], 20: ["friend,"],
                40: ["how"]}  # the text goes on: the last word started stays until more comes
    for heard, current in expected.items():
        ui = ui_with(playing(heard + 5, 4, latency_ms=0.0))  # 4 queued + 1 taken
        assert styled(words_text(ui, ui.progress()))[CURRENT] == current, heard
    ui = ui_with(playing(25, 10))  # the same frames made, a deeper buffer: an earlier word
    assert styled(words_text(ui, ui.progress()))[CURRENT] == ["there"]


def test_end_of_the_audio_and_a_finished_run_mark_every_started_word_spoken():
    ui = ui_with(playing(60, 0, latency_ms=0.0))
    ui.set_end(32)
    assert styled(words_text(ui, ui.progress()))[SPOKEN] == TEXT[:5]
    ui = ui_with(playing(10, 3))
    ui.stop(done=True)
    words = styled(words_text(ui, ui.snapshot()))
    assert words[SPOKEN] == TEXT[:5] and words[CURRENT] == [] and words[UNREAD] == TEXT[5:]
    assert speak_status_text(ui.snapshot(), 5, 7).plain.startswith("audio 0.8s made 0.8s played")


def test_writing_a_file_shows_generation_progress():
    p = SpeakProgress(frames=25, elapsed_s=1.0)
    ui = ui_with(p)
    words = styled(words_text(ui, p))
    assert words == {CURRENT: [], SPOKEN: [], PENDING: TEXT[:5], UNREAD: TEXT[5:]}
    assert speak_status_text(p, 5, 7).plain == "words 5/7 | audio 2.0s | RTF 0.50 | 0:01"
    assert speak_status_text(p, 5, None).plain.startswith("words 5 | audio 2.0s")


def test_status_line_while_playing():
    line = speak_status_text(playing(18, 3, late=2, lost=1), 5, 7).plain
    # 1.44 s made, frame 13 heard (1.04 s), (2.0 - 1.28) s of compute for 1.44 s of audio.
    assert line == "audio 1.4s made 1.0s played | RTF 0.50 | buf 240ms | late 2 lost 1 | 0:02"
    assert "late" not in speak_status_text(playing(18, 3), 5, 7).plain
    assert speak_status_text(SpeakProgress(), 0, 3).plain == "words 0/3 | audio 0.0s | RTF - | 0:00"


def test_a_long_text_shows_a_window_around_the_word_heard():
    words = [f"w{i}" for i in range(1000)]
    ui = PlainSpeakUI(lambda: playing(405, 4, latency_ms=0.0), words, out=io.StringIO())
    for i in range(500):
        ui.on_word(words[i], i)
    text = words_text(ui, ui.progress())
    shown = text.plain.split()
    assert shown[0] == "…" and shown[-1] == "…" and "w0" not in shown
    assert styled(text)[CURRENT] == ["w400"] and len(shown) <= 2 + 160


def captured_terminal(width: int = 80) -> tuple[io.StringIO, Console]:
    buf = io.StringIO()
    return buf, Console(file=buf, width=width, force_terminal=True, color_system=None)


def test_rich_session_renders_text_and_status_to_a_terminal():
    buf, console = captured_terminal()
    p = playing(18, 3)
    ui = make_speak_ui(lambda: p, TEXT, console)
    assert isinstance(ui, RichSpeakUI)
    with ui:
        for w, s in zip(TEXT, STEPS, strict=False):
            ui.on_entry(s)
            ui.on_word(w, s)
    out = buf.getvalue()
    assert "Hello there my friend, how are you?" in out
    assert "audio 1.4s made 1.4s played | RTF 0.50 | buf 240ms | 0:02" in out  # played out


def test_rich_status_uses_the_console_colours():
    console = Console(record=True, width=80, force_terminal=True, color_system="standard")
    ui = ui_with(playing(18, 3), console)
    console.print(ui.renderable())
    assert "\x1b[1;7mthere\x1b[0m" in console.export_text(styles=True)  # bold reverse


def test_plain_output_prints_words_as_generated_then_a_newline():
    buf = io.StringIO()
    ui = make_speak_ui(lambda: SpeakProgress(), TEXT, Console(file=buf))
    assert isinstance(ui, PlainSpeakUI)
    ui.out = buf
    with ui:
        for w, s in zip(TEXT, STEPS, strict=False):
            ui.on_word(w, s)
    assert buf.getvalue() == "Hello there my friend, how \n"
