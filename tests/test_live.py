"""audio/live.py: resampler, chunker, jitter buffer, and a loopback through a real PulseAudio server."""

from __future__ import annotations

import time
import wave

import numpy as np
import pytest

from moshi_mlx.audio import live


@pytest.mark.parametrize("sr_in,sr_out", [(48000, 24000), (44100, 24000), (24000, 48000)])
def test_stream_resampler_is_continuous_across_blocks(sr_in, sr_out):
    t = np.arange(sr_in) / sr_in
    x = np.sin(2 * np.pi * 220 * t).astype(np.float32)
    rs = live.StreamResampler(sr_in, sr_out)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), 20, replace=False))
    y = np.concatenate([rs(b) for b in np.split(x, cuts)])
    whole = np.interp(np.arange(len(y)) * sr_in / sr_out, np.arange(len(x)), x)
    assert abs(len(y) - sr_out) <= 1
    np.testing.assert_allclose(y, whole, atol=1e-5)


def test_frame_chunker_recuts_exactly():
    ch = live.FrameChunker(4)
    out = ch.push(np.arange(3)) + ch.push(np.arange(3, 10)) + ch.push(np.arange(10, 12))
    assert [f.tolist() for f in out] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_output_path_late_and_lost_frames_without_device():
    a = live.LiveAudio(jitter_frames=2, max_lag_frames=12)
    ticks = iter(np.arange(100) * 0.08)  # the callback runs once per 80 ms: no bursts
    a.jitter.clock = lambda: next(ticks)
    out = np.empty((live.FRAME_SIZE, 1), np.float32)
    a._on_output(out, live.FRAME_SIZE, None, None)
    assert not out.any() and a.stats.late_frames == 0  # not started yet: silence is not "late"
    a.write_frame(np.full(live.FRAME_SIZE, 0.1))
    a._on_output(out, live.FRAME_SIZE, None, None)
    assert not out.any()  # one frame queued < jitter target of 2
    a.write_frame(np.full(live.FRAME_SIZE, 0.2))
    for expect in (0.1, 0.2):
        a._on_output(out, live.FRAME_SIZE, None, None)
        np.testing.assert_allclose(out[:, 0], expect)
    a._on_output(out, live.FRAME_SIZE, None, None)  # underrun
    # Silence played, but no frame is late yet: if the session ended here (the device draining
    # after Moshi's last frame), nothing missed its slot.
    assert not out.any() and a.stats.late_frames == 0 and a.stats.output_frames == 2
    for i in range(15):  # model far faster than the card: only past the 12-frame cap is one lost
        a.write_frame(np.full(live.FRAME_SIZE, 0.1 + i / 100))
        assert a.stats.late_frames == 1  # the frame that missed its slot arrived: late, once
    assert a.stats.lost_frames == 3 and a.jitter.depth == 12
    assert a.jitter.target == 3  # the underrun raised the target by one
    a._on_output(out, live.FRAME_SIZE, None, None)
    np.testing.assert_allclose(out[:, 0], 0.13)
    assert a.output_level == pytest.approx(0.24)


def test_draining_after_the_last_frame_is_not_late():
    a = live.LiveAudio(jitter_frames=1)
    out = np.empty((live.FRAME_SIZE, 1), np.float32)
    for _ in range(3):  # the model keeps pace: one frame written per callback
        a.write_frame(np.full(live.FRAME_SIZE, 0.1))
        a._on_output(out, live.FRAME_SIZE, None, None)
    for _ in range(3):  # session over: the streams run on until stop() with nothing queued
        a._on_output(out, live.FRAME_SIZE, None, None)
    assert a.stats.output_frames == 3 and a.stats.late_frames == 0


def test_input_queue_drops_oldest_when_model_lags():
    a = live.LiveAudio(max_lag_frames=3)
    a._resample_in = live.StreamResampler(24000, 24000)
    a._chunk_in = live.FrameChunker(live.FRAME_SIZE)
    for i in range(5):
        a._on_input(np.full((live.FRAME_SIZE, 1), i, np.float32), live.FRAME_SIZE, None, None)
    assert a.stats.lost_frames == 2 and a.stats.input_frames == 5
    assert [a.read_frame(0.01)[0] for _ in range(3)] == [2, 3, 4]
    assert a.read_frame(0.01) is None


def test_pick_rate_falls_back_to_native_rate():
    class FakeSd:
        def check_input_settings(self, **kw):
            raise ValueError("Invalid sample rate")

        def query_devices(self, device, kind):
            return {"default_samplerate": 44100.0}

    assert live._pick_rate(FakeSd(), "input", None) == 44100


def test_loopback_through_pulseaudio(pulse_server, tmp_path):
    sr = 24000
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(sr * 2) / sr) * 32767).astype("<i2")
    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(tone.tobytes())
    raw = tmp_path / "spk.raw"
    rec = pulse_server.record(raw)
    with live.LiveAudio("pulse", "pulse") as audio:
        assert audio.read_frame(timeout=5.0) is not None  # the ALSA pulse plugin starts slowly
        player = pulse_server.play(wav)
        t0, loud = time.monotonic(), 0
        while time.monotonic() - t0 < 2.5:
            frame = audio.read_frame(timeout=1.0)
            assert frame is not None, "no microphone frames from the pulse server"
            loud += audio.input_level > 0.2
            audio.write_frame(frame)  # echo the mic to the speaker
        player.wait(5)
        time.sleep(0.3)
    rec.terminate()
    rec.wait(5)
    got = pulse_server.read_raw(raw)
    assert loud >= 15  # ~2 s of tone seen at the input, frame by frame
    assert audio.stats.input_frames >= 25 and audio.stats.lost_frames == 0
    assert np.abs(got).max() > 0.3  # and heard on the speaker's monitor
    # The tone, over everything loud that was played (not a window around the loudest sample,
    # which can be the click of an underrun on a loaded machine). Up to 10% high: the jitter
    # buffer may have played a stretch faster to catch up after the pulse plugin's bursts.
    loud_idx = np.flatnonzero(np.abs(got) > 0.3)
    seg = got[loud_idx[0]:loud_idx[-1]]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    assert 430 <= spec.argmax() * sr / len(seg) <= 490


def test_resampled_devices_through_pulseaudio(pulse_server, monkeypatch):
    """Devices that refuse 24 kHz: opened at 48 kHz (mic) and 44.1 kHz (speaker) and resampled."""
    rates = {"input": 48000, "output": 44100}
    monkeypatch.setattr(live, "_pick_rate", lambda sd, kind, device: rates[kind])
    sr = 24000
    tone = 0.4 * np.sin(2 * np.pi * 300 * np.arange(sr) / sr)
    with live.LiveAudio("pulse", "pulse") as audio:
        assert (audio.input_rate, audio.output_rate) == (48000, 44100)
        assert audio._streams[0].blocksize == 3840 and audio._streams[1].blocksize == 3528
        assert audio.read_frame(timeout=5.0).shape == (live.FRAME_SIZE,)
        for i in range(12):
            audio.write_frame(tone[(i % 12) * 1920:(i % 12 + 1) * 1920])
            frame = audio.read_frame(timeout=2.0)
            assert frame is not None and frame.dtype == np.float32
        time.sleep(0.5)
    assert audio.stats.output_frames >= 8  # (drops here would only reflect machine load)


def test_recovers_after_a_slow_model_through_pulseaudio(pulse_server):
    """A model stalling for ~1 s: old input is dropped past a small input bound (counted lost),
    then the output backlog shrinks back by skipping quiet frames."""
    with live.LiveAudio("pulse", "pulse", max_lag_frames=4) as audio:
        assert audio.read_frame(timeout=5.0) is not None
        time.sleep(1.0)  # the model thread stalls: ~12 frames arrive, only 4 are kept
        lost = audio.stats.dropped_input
        assert lost >= 5 and audio._in_q.qsize() <= 4
        for _ in range(4):  # the model catches up in a burst: its backlog moves to the output
            audio.write_frame(audio.read_frame(timeout=2.0))
        assert audio.jitter.depth >= 3
        for _ in range(60):  # back to real time: the output backlog is trimmed to the target
            frame = audio.read_frame(timeout=2.0)
            assert frame is not None
            audio.write_frame(frame)
        assert audio._in_q.qsize() <= 1
        assert audio.jitter.depth <= audio.jitter.target + 2  # + 1 slack + this one
        assert 1 <= audio.stats.skipped_quiet <= 4  # silent mic frames: skipped, not lost
        assert audio.stats.dropped_output == 0
        assert audio.stats.dropped_input == lost  # no more input drops once the model keeps up
