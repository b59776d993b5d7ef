"""`cli.py speak` without `--output`: the speech plays through a real PulseAudio server (the
virtual speaker's monitor is recorded) with backpressure: it hears exactly what `--output`
writes, no frame lost; and the output buffer's flush and backpressure driven without a device."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from moshi_mlx.audio import live
from moshi_mlx.audio.wav import read_wav
from moshi_mlx.tts.play import SpeakerOutput
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def tts_repo(tiny_tts_repo):
    return tiny_tts_repo


def _speak(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "speak", *args],
                          env=dict(server.env, PYTHONUNBUFFERED="1"), capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_speak_plays_through_pulseaudio(pulse_server, tts_repo, tmp_path):
    spk = tmp_path / "speaker.raw"
    args = ("Hello there, how are you today?", "--model-dir", str(tts_repo), "--seed", "1")
    recorder = pulse_server.record(spk)
    try:
        p = _speak(pulse_server, *args)
        pulse_server.record_more(spk)  # the last frames are still on their way to the file
    finally:
        recorder.terminate()
        recorder.wait(10)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "how are you" in p.stdout
    summary = p.stdout.strip().splitlines()[-1]
    assert summary.startswith("played ") and "lost 0" in summary, summary
    frames = int(summary.split(": ")[1].split()[0])
    assert frames > 10  # the whole utterance went through the buffer
    heard = pulse_server.read_raw(spk)
    assert np.sqrt(np.mean(heard**2)) > 0.01  # the speech reached the speaker
    # Every frame was played, once, unchanged (no drop, skip or catch-up): the speaker heard
    # exactly what --output writes with the same seed (up to the wav's 16-bit rounding).
    assert _speak(pulse_server, *args, "-o", str(tmp_path / "o.wav")).returncode == 0
    wav = read_wav(tmp_path / "o.wav")
    assert len(wav) == frames * live.FRAME_SIZE
    start = np.flatnonzero(np.abs(heard) > 1e-3)[0] - np.flatnonzero(np.abs(wav) > 1e-3)[0]
    assert len(heard) >= start + len(wav)
    np.testing.assert_allclose(heard[start:start + len(wav)], wav, atol=1e-3)


def test_speak_unknown_device_is_one_line(pulse_server, tts_repo):
    p = _speak(pulse_server, "Hi.", "--model-dir", str(tts_repo), "--output-device", "99")
    assert p.returncode == 1 and p.stderr.strip().startswith("error: cannot use output device 99")
    assert len(p.stderr.strip().splitlines()) == 1 and p.stdout == ""


def test_output_only_opens_no_input_stream(pulse_server):
    a = live.LiveAudio(input=False)
    a.start()
    try:
        assert len(a._streams) == 1 and a._streams[0].channels == 1
        assert a.output_latency_ms > 0 and a.input_latency_ms == 0
        assert type(a._streams[0]).__name__ == "OutputStream"
    finally:
        a.stop()


class _FakeCard:
    """The output callback driven by hand: `LiveAudio` without streams."""

    def __init__(self) -> None:
        self.audio = live.LiveAudio(jitter_frames=3, input=False)
        ticks = itertools.count(0.0, 0.08)  # one block per 80 ms: no consumption bursts
        self.audio.jitter.clock = lambda: next(ticks)
        self.out = np.empty((live.FRAME_SIZE, 1), np.float32)
        self.played: list[float] = []
        self.stopped = False
        self.audio.stop = self._stop  # type: ignore[method-assign]

    def _stop(self) -> None:
        self.stopped = True

    def pull(self) -> None:
        if self.audio.jitter.pop_into(self.out[:, 0]):
            self.played.append(float(self.out[0, 0]))


def test_backpressure_blocks_instead_of_dropping(monkeypatch):
    card = _FakeCard()
    player = SpeakerOutput(audio=card.audio)
    # Each wait for room lets the "device" consume one block: the writer never runs ahead.
    monkeypatch.setattr("moshi_mlx.tts.play.time.sleep", lambda s: card.pull())
    for i in range(40):  # far more than the 25-block hard cap, written as fast as possible
        player.write(np.full(live.FRAME_SIZE, 0.1 + i / 100, np.float32))
        assert card.audio.jitter.depth <= 3 == card.audio.jitter.target
    player.close()
    assert card.stopped and card.audio.jitter.depth == 0
    np.testing.assert_allclose(card.played, 0.1 + np.arange(40) / 100, atol=1e-6)
    st = card.audio.stats
    assert st.lost_frames == 0 and st.skipped_quiet == 0 and st.catchup_frames == 0


def test_close_flushes_a_stream_shorter_than_the_target(monkeypatch):
    card = _FakeCard()
    player = SpeakerOutput(audio=card.audio)
    monkeypatch.setattr("moshi_mlx.tts.play.time.sleep", lambda s: card.pull())
    for v in (0.3, 0.4):  # 2 blocks < target 3: without the flush playback never starts
        player.write(np.full(live.FRAME_SIZE, v, np.float32))
    card.pull()
    assert card.played == []
    player.close()
    np.testing.assert_allclose(card.played, [0.3, 0.4], atol=1e-6)


def test_a_stalled_device_is_an_error(monkeypatch):
    card = _FakeCard()
    player = SpeakerOutput(audio=card.audio)
    clock = iter(np.arange(0, 100, 0.5))
    monkeypatch.setattr("moshi_mlx.tts.play.time.sleep", lambda s: None)
    monkeypatch.setattr("moshi_mlx.tts.play.time.monotonic", lambda: next(clock))
    with pytest.raises(live.AudioDeviceError, match="stopped playing"):
        for _ in range(5):  # nothing consumes: the 4th write waits in vain
            player.write(np.zeros(live.FRAME_SIZE, np.float32))
