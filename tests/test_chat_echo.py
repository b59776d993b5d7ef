"""`cli.py chat` on laptop-like speakers: Moshi's voice loops back into the microphone.

The private PulseAudio server gets an echo path (`module-loopback` from the speaker's monitor into
the microphone sink, 60 ms, full volume: the echo is as loud as the user). `chat --echo on` runs
the tiny model (its voice is continuous, Mimi-decoded random codes at about -20 dBFS) while the
user's spoken file (espeak, tests/assets/speech/user.wav) is played into the microphone a few
seconds after the start. The raw microphone (echo + user) is recorded beside the session; channel 0
of `--record` is what Moshi heard (after the canceller). Checks, as in the issue: at least 25 dB of
echo removed where only Moshi speaks (once adapted: median over 0.25 s windows from 4 s on), STOI >= 0.6 of what Moshi heard against the
spoken file where the user speaks over Moshi, no lost frames, the stats record the canceller.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moshi_mlx.audio.wav import read_wav
from moshi_mlx.testing.echo_metrics import db
from tests.audio_server import MIC
from tests.helpers import chat, talk_to
from tests.helpers import read_wav as read_wav_channels

pytest.importorskip("pyaec")
pystoi = pytest.importorskip("pystoi")

RATE = 24000
USER_WAV = Path(__file__).parent / "assets" / "speech" / "user.wav"
USER_AFTER_S = 8.0  # the user starts talking this long after the app starts listening
DURATION_S = USER_AFTER_S + 6.5


def onset(x: np.ndarray, clean: np.ndarray) -> int:
    """Where `clean` starts in `x` (FFT cross-correlation)."""
    n = 1 << int(np.ceil(np.log2(len(x) + len(clean))))
    c = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(clean, n)), n)[: len(x) - len(clean)]
    return int(np.argmax(c))



def _session(server, tiny_repo: Path, tmp: Path) -> dict:
    """One `chat --echo on` session on the echo path; returns the measurements."""
    tmp.mkdir(parents=True, exist_ok=True)
    user = read_wav(USER_WAV)
    raw_mic = tmp / "mic.raw"
    tr, rec = tmp / "t.json", tmp / "rec.wav"
    recorder = server.record(raw_mic, sink=MIC)
    p = chat(server, "--model-dir", str(tiny_repo), "--duration", str(DURATION_S), "--echo", "on",
             "--transcript", str(tr), "--record", str(rec), "--seed", "1")
    _, out, err = talk_to(p, server, USER_WAV, after_s=USER_AFTER_S, timeout=120,
                          recorder=recorder)
    assert p.returncode == 0, err
    assert "Traceback" not in err and "echo removed" in out
    stats = json.loads(tr.read_text())["stats"]
    assert stats["echo"] == "on" and stats["echo_canceller"].startswith("speexdsp")
    assert stats["echo_active_frames"] > 50
    assert stats["echo_erle_db_p50"] is not None  # (double talk and adaptation included)

    both, rate, ch = read_wav_channels(rec)
    assert (rate, ch) == (RATE, 2)
    heard, moshi = both[0], both[1]
    mic = server.read_raw(raw_mic)
    assert db(moshi) > -40  # Moshi spoke the whole time
    at_mic, at_heard = onset(mic, user), onset(heard, user)
    assert at_heard > 3 * RATE and at_mic > 3 * RATE  # found where it was played
    # Only Moshi speaks: from 4 s after the start (adapted) to just before the user, ERLE in
    # 0.25 s windows where Moshi is heard (a late frame plays a moment of silence); the median.
    win = RATE // 4
    starts = range(at_heard - 4 * RATE, at_heard - win, win)
    raw_db = [db(mic[at_mic - at_heard + i:at_mic - at_heard + i + win]) for i in starts]
    audible = [(r, i) for r, i in zip(raw_db, starts, strict=True) if r > -40]
    m = {"stats": stats, "audible": len(audible), "windows": len(raw_db),
         "erle": float(np.median([r - db(heard[i:i + win]) for r, i in audible])),
         # the user over Moshi: intelligible in what Moshi heard?
         "raw_stoi": float(pystoi.stoi(user, mic[at_mic:at_mic + len(user)], RATE)),
         "heard_stoi": float(pystoi.stoi(user, heard[at_heard:at_heard + len(user)], RATE))}
    print(f"ERLE {m['erle']:.1f} dB, STOI raw mic {m['raw_stoi']:.2f}, heard "
          f"{m['heard_stoi']:.2f}, stats ERLE median {stats['echo_erle_db_p50']}, delay "
          f"{stats['echo_delay_ms']} ms ({stats['echo_delay_source']}, "
          f"{stats['echo_delay_changes']} changes), echo {stats['echo_ms_p50']} ms/frame, "
          f"frame p50 {stats['frame_ms_p50']} ms, lost {stats['lost_frames']}")
    return m


def _meets_targets(m: dict) -> bool:
    return (m["audible"] >= m["windows"] // 2 and m["erle"] >= 25.0
            and m["stats"]["lost_frames"] == 0 and m["heard_stoi"] >= 0.6)


def test_chat_cancels_moshis_echo_and_keeps_the_user(echo_path, tiny_repo, tmp_path):
    # Up to three sessions: on a CPU shared with other jobs, PulseAudio's loopback (the test's
    # "room") can skip, which moves the echo path mid-session; the canceller then re-adapts for
    # seconds. A canceller that does not work fails every session; the misses are reported.
    misses = []
    for attempt in range(3):
        m = _session(echo_path, tiny_repo, tmp_path / str(attempt))
        if _meets_targets(m):
            break
        misses.append({k: m[k] for k in ("erle", "heard_stoi", "audible", "windows")})
    m["earlier_misses"] = misses
    assert m["audible"] >= m["windows"] // 2 and m["erle"] >= 25.0, m
    assert m["stats"]["lost_frames"] == 0, str(m["stats"])[-400:]  # (a lost frame cuts the user)
    assert m["heard_stoi"] >= 0.6, m


# --- the pieces, without a sound server -----------------------------------------------------------

class _Time:
    """PortAudio's callback time info (the fields the app reads)."""

    def __init__(self, adc: float = 0.0, dac: float = 0.0) -> None:
        self.inputBufferAdcTime, self.outputBufferDacTime = adc, dac


def test_live_audio_hands_over_exactly_what_was_played():
    from moshi_mlx.audio import live

    a = live.LiveAudio(jitter_frames=1, keep_played=True)
    out = np.zeros((live.FRAME_SIZE, 1), np.float32)
    a._on_input(np.zeros((live.FRAME_SIZE, 1), np.float32), live.FRAME_SIZE, _Time(adc=10.0), None)
    a._on_output(out, live.FRAME_SIZE, _Time(dac=10.25), None)  # nothing queued: silence
    voice = np.linspace(-0.5, 0.5, live.FRAME_SIZE, dtype=np.float32)
    a.write_frame(voice)
    a._on_output(out, live.FRAME_SIZE, _Time(dac=10.33), None)
    played = a.take_played()
    assert np.array_equal(played, np.concatenate([np.zeros(live.FRAME_SIZE, np.float32), voice]))
    assert a.take_played().size == 0  # handed over once
    assert a.echo_delay_ms() == pytest.approx(250.0)  # first DAC time - first ADC time


def test_input_dropped_for_lag_comes_back_as_silence_of_its_length():
    from moshi_mlx.audio import live

    a = live.LiveAudio(max_lag_frames=3, keep_played=True)
    for i in range(6):  # the model stalled for 6 frames
        a._on_input(np.full((live.FRAME_SIZE, 1), i + 1, np.float32), live.FRAME_SIZE, None, None)
    assert a.stats.dropped_input == 3
    dropped = a.take_dropped_input()
    assert dropped.shape == (3 * live.FRAME_SIZE,) and not dropped.any()
    assert a.read_frame(timeout=0.1)[0] == 4.0  # the oldest kept frame comes next
    assert a.take_dropped_input().size == 0


def test_echo_off_on_auto(monkeypatch):
    import io

    from moshi_mlx.audio import chat
    from moshi_mlx.audio.echo import EchoCanceller, EchoCancellerUnavailable
    from moshi_mlx.ui.terminal import PlainUI

    out = io.StringIO()
    assert chat.make_echo_canceller("off", PlainUI(out)) is None
    assert isinstance(chat.make_echo_canceller("auto", PlainUI(out)), EchoCanceller)
    monkeypatch.setitem(__import__("sys").modules, "pyaec", None)  # the library is missing
    with pytest.raises(EchoCancellerUnavailable, match="pip install pyaec, or --echo off"):
        chat.make_echo_canceller("on", PlainUI(out))
    assert chat.make_echo_canceller("auto", PlainUI(out)) is None
    text = out.getvalue()
    assert "echo cancellation off" in text and "pip install pyaec" in text
    assert "headphones" in text.split("echo cancellation unavailable")[1]


def test_cli_echo_on_without_the_library_is_one_line(tiny_repo, capsys, monkeypatch):
    import cli

    monkeypatch.setitem(__import__("sys").modules, "pyaec", None)
    rc = cli.main(["chat", "--model-dir", str(tiny_repo), "--echo", "on"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert err.startswith("error: echo cancellation is unavailable: the pyaec package is not "
                          "installed (pip install pyaec, or --echo off)")


def test_status_line_shows_the_echo_removed():
    from moshi_mlx.ui.terminal import Status, status_text

    assert "aec" not in status_text(Status(model="m")).plain
    assert "aec -38dB" in status_text(Status(model="m", echo_db=38.2)).plain
