"""The echo canceller on synthetic echo paths: how much echo it removes and whether the user stays
intelligible.

Moshi's voice (tests/assets/speech/moshi.wav, espeak) goes through a known room response (a direct
path after a bulk delay, then 120 ms of decaying reflections) into the microphone, as loud as the
user's voice (user.wav) that starts later and talks over it. Checks: echo return loss enhancement
(ERLE) where only Moshi speaks, STOI of the cleaned microphone against the user's words, delay
changes mid-session, silence, clipping, NaN, and the one-line error when the library is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from moshi_mlx.audio.wav import read_wav
from moshi_mlx.testing.echo_metrics import aligned_stoi, db

echo = pytest.importorskip("moshi_mlx.audio.echo")
pytest.importorskip("pyaec")
pystoi = pytest.importorskip("pystoi")

RATE, FRAME = 24000, 1920
ASSETS = Path(__file__).parent / "assets" / "speech"


def room(delay_ms: float, seed: int = 0, tail_ms: float = 120.0) -> np.ndarray:
    """A unit-energy echo path: silence for `delay_ms`, a direct path, decaying reflections."""
    rng = np.random.default_rng(seed)
    d, n = int(RATE * delay_ms / 1000), int(RATE * (delay_ms + tail_ms) / 1000)
    h = np.zeros(n)
    h[d:] = rng.standard_normal(n - d) * np.exp(-np.arange(n - d) / (RATE * 0.03))
    h[d] += 3.0
    return (h / np.sqrt(np.sum(h ** 2))).astype(np.float32)




@pytest.fixture(scope="module")
def voices() -> tuple[np.ndarray, np.ndarray]:
    return 0.5 * read_wav(ASSETS / "moshi.wav")[: 12 * RATE], read_wav(ASSETS / "user.wav")


def run(ec, mic: np.ndarray, played: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mic)
    for i in range(0, len(mic) - FRAME + 1, FRAME):
        out[i:i + FRAME] = ec.process(mic[i:i + FRAME], played[i:i + FRAME])
    return out


def through_room(played: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.convolve(played, h)[: len(played)].astype(np.float32)


USER_AT = 7 * RATE  # the user starts talking over Moshi here


@pytest.fixture(scope="module")
def double_talk(voices):
    """60 ms echo path, delay known from PortAudio; the user talks over Moshi from 7 s."""
    moshi, user = voices
    e = through_room(moshi, room(60))
    user = (user * np.sqrt(np.mean(e ** 2) / np.mean(user ** 2)))[: len(e) - USER_AT]
    mic = e.copy()
    mic[USER_AT:USER_AT + len(user)] += user
    mic += 1e-4 * np.random.default_rng(1).standard_normal(len(mic)).astype(np.float32)
    ec = echo.EchoCanceller(stream_delay_ms=60)
    return mic, user, ec, run(ec, mic, moshi), ec.erle_db


def test_known_echo_path_is_removed(double_talk):
    mic, _, ec, out, erle_before_user = double_talk
    assert np.isfinite(out).all()
    only_moshi = slice(3 * RATE, USER_AT)  # after 3 s of adaptation
    erle = db(mic[only_moshi]) - db(out[only_moshi])
    assert erle >= 30.0, erle
    # the smoothed figure for the status line agrees with the measured one (before double talk)
    assert erle_before_user is not None and ec.stats()["echo_active_frames"] > 100
    assert ec.stats()["echo_delay_ms"] == pytest.approx(60, abs=12)


def test_double_talk_keeps_the_user_intelligible(double_talk):
    mic, user, _, out, _ = double_talk
    raw, cleaned = aligned_stoi(user, mic, USER_AT), aligned_stoi(user, out, USER_AT)
    assert raw < 0.9  # the echo does hurt (as loud as the user)
    assert cleaned >= 0.8 and cleaned > raw, (raw, cleaned)
    # the user's voice is kept at about its level (not suppressed as echo)
    talk = slice(USER_AT, USER_AT + len(user))
    assert db(out[talk]) > db(user) - 6.0


def test_status_erle_tracks_echo_only_periods(voices):
    moshi, _ = voices
    mic = through_room(moshi[: 7 * RATE], room(40, seed=3))
    ec = echo.EchoCanceller(stream_delay_ms=40)
    assert ec.erle_db is None  # nothing played yet
    run(ec, mic, moshi[: 7 * RATE])
    assert ec.erle_db >= 25.0


def test_delay_change_mid_session_is_found(voices):
    """The echo path's delay jumps from 40 to 200 ms at 5 s (e.g. an output device change)."""
    moshi, _ = voices
    cut = 5 * RATE
    mic = np.concatenate([through_room(moshi, room(40, seed=4))[:cut],
                          through_room(moshi, room(200, seed=5))[cut:]])
    ec = echo.EchoCanceller(stream_delay_ms=40)
    out = run(ec, mic, moshi)
    assert ec.delay_source == "measured" and ec.delay_changes >= 1
    assert ec.delay_ms == pytest.approx(200, abs=10)
    last = slice(9 * RATE, 12 * RATE)
    assert db(mic[last]) - db(out[last]) >= 25.0


def test_unknown_delay_is_measured(voices):
    """No PortAudio estimate (0 ms) and a 150 ms path: the estimator finds it."""
    moshi, _ = voices
    mic = through_room(moshi, room(150, seed=6))
    ec = echo.EchoCanceller(stream_delay_ms=0)
    out = run(ec, mic, moshi)
    assert ec.delay_ms == pytest.approx(150, abs=10)
    last = slice(8 * RATE, 12 * RATE)
    assert db(mic[last]) - db(out[last]) >= 25.0


def test_silence_stays_silence(voices):
    moshi, _ = voices
    ec = echo.EchoCanceller(stream_delay_ms=50)
    zeros = np.zeros(3 * RATE, np.float32)
    assert np.array_equal(run(ec, zeros, zeros), zeros)
    # Moshi plays but the microphone hears nothing (speakers muted): nothing is invented
    out = run(ec, np.zeros(3 * RATE, np.float32), moshi[: 3 * RATE])
    assert np.abs(out).max() < 1e-3


def test_clipped_microphone_stays_finite_and_bounded(voices):
    moshi, _ = voices
    mic = 4.0 * through_room(moshi[: 6 * RATE], room(50, seed=7))  # far beyond full scale
    ec = echo.EchoCanceller(stream_delay_ms=50)
    out = run(ec, mic, moshi[: 6 * RATE])
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    clipped = np.clip(mic, -1, 1)
    assert db(clipped[3 * RATE:]) - db(out[3 * RATE:]) >= 10.0  # clipping is not linear: less


def test_nan_input_is_treated_as_silence():
    ec = echo.EchoCanceller()
    bad = np.full(FRAME, np.nan, np.float32)
    out = ec.process(bad, bad)
    assert out.shape == (FRAME,) and np.isfinite(out).all() and np.abs(out).max() == 0.0


def test_played_blocks_may_arrive_unevenly(voices):
    """The reference is a stream: played audio handed over in uneven pieces (a callback late by
    one frame, then two at once) gives exactly the output of even pieces when the delay covers it."""
    moshi, _ = voices
    n = 40 * FRAME
    mic = through_room(moshi[:n], room(120, seed=8))
    even = run(echo.EchoCanceller(stream_delay_ms=120, estimate=False), mic, moshi[:n])
    ec = echo.EchoCanceller(stream_delay_ms=120, estimate=False)
    uneven, pos = np.zeros_like(mic), 0
    for k, i in enumerate(range(0, n, FRAME)):
        take = 0 if k % 3 == 1 else (2 * FRAME if k % 3 == 2 else FRAME)
        uneven[i:i + FRAME] = ec.process(mic[i:i + FRAME], moshi[pos:pos + take])
        pos += take
    assert np.array_equal(even, uneven)


def test_estimate_delay_finds_an_exact_lag():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(30000).astype(np.float32)
    lag, max_lag = 1234, 3000
    mic = x[max_lag - lag: max_lag - lag + 20000]  # mic[t] = ref[t + max_lag - lag]
    found, conf = echo.estimate_delay(mic, x[: 20000 + max_lag], max_lag)
    assert found == lag and conf > 50


def test_bad_stream_delay_is_rejected():
    ec = echo.EchoCanceller()
    with pytest.raises(ValueError, match="stream delay"):
        ec.set_stream_delay_ms(float("nan"))
    ec.set_stream_delay_ms(-5000)  # clamped to the longest lead
    assert ec.delay_ms == -echo.MAX_LEAD_MS


def test_missing_library_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyaec", None)  # import pyaec -> ImportError
    with pytest.raises(echo.EchoCancellerUnavailable) as e:
        echo.check_available()
    msg = str(e.value)
    assert "\n" not in msg and "pip install pyaec" in msg and "--echo off" in msg


def test_speex_high_pass_is_undone():
    """pyaec's Speex runs its 8 kHz DC notch at 24 kHz (-17 dB at 200 Hz): undone to Speex's
    high-rate notch, so a 150 Hz voice fundamental passes a linear stage (silent reference)."""
    t = np.arange(RATE) / RATE
    tone = (8000 * np.sin(2 * np.pi * 150 * t)).astype(np.int16)
    stage = echo._SpeexStage(480, RATE, False)
    silent = np.zeros(480, np.int16)
    raw = np.concatenate([stage(tone[i:i + 480], silent) for i in range(0, RATE, 480)])
    fixed = echo._NotchUndo()(raw.astype(np.float64))
    assert db(raw[RATE // 2:] / 8000) - db(tone[RATE // 2:] / 8000) < -15  # the notch at 8 kHz
    assert abs(db(fixed[RATE // 2:] / 8000) - db(tone[RATE // 2:] / 8000)) < 2.0


def test_user_alone_passes_unchanged(voices):
    """Moshi silent: the user's words come through at their level and intelligible (the
    preprocessor delays them by one 20 ms block)."""
    _, user = voices
    ec = echo.EchoCanceller(stream_delay_ms=60)
    n = len(user) // FRAME * FRAME
    out = run(ec, user[:n], np.zeros(n, np.float32))
    assert abs(db(out) - db(user[:n])) < 1.5
    assert aligned_stoi(user[: n - 1200], out, 0) >= 0.95
