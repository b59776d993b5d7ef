"""WAV reading/writing and the resampler (`moshi_mlx.audio.wav`)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from moshi_mlx.audio.wav import AudioFileError, read_wav, resample, write_wav


def wav_bytes(x: np.ndarray, rate: int, kind: str, extensible: bool = False) -> bytes:
    """Encode float [N, C] in [-1, 1] as a RIFF/WAVE file of the given sample kind."""
    n, c = x.shape
    if kind == "u8":
        raw, tag, width = (np.round(x * 127) + 128).astype(np.uint8).tobytes(), 1, 1
    elif kind == "i16":
        raw, tag, width = np.round(x * 32767).astype("<i2").tobytes(), 1, 2
    elif kind == "i24":
        v = np.round(x * (2**23 - 1)).astype(np.int32).reshape(-1)
        b = np.stack([v & 255, (v >> 8) & 255, (v >> 16) & 255], axis=1).astype(np.uint8)
        raw, tag, width = b.tobytes(), 1, 3
    elif kind == "i32":
        raw, tag, width = np.round(x * (2**31 - 1)).astype("<i4").tobytes(), 1, 4
    elif kind == "f32":
        raw, tag, width = x.astype("<f4").tobytes(), 3, 4
    else:
        raw, tag, width = x.astype("<f8").tobytes(), 3, 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, c, rate, rate * c * width,
                      c * width, 8 * width)
    if extensible:
        guid = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, 8 * width, 0) + guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd-sized chunk before data (padded)
    body += b"data" + struct.pack("<I", len(raw)) + raw
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


@pytest.mark.parametrize("kind,tol", [("u8", 1e-2), ("i16", 1e-4), ("i24", 1e-6), ("i32", 1e-7),
                                      ("f32", 1e-7), ("f64", 1e-7)])
@pytest.mark.parametrize("extensible", [False, True])
def test_reads_every_encoding_stereo_to_mono(tmp_path, kind, tol, extensible):
    left, right = tone(440, 24000, 0.1), tone(660, 24000, 0.1, amp=0.3)
    p = tmp_path / "x.wav"
    p.write_bytes(wav_bytes(np.stack([left, right], 1), 24000, kind, extensible))
    y = read_wav(p)
    assert y.dtype == np.float32 and y.shape == (2400,)
    np.testing.assert_allclose(y, (left + right) / 2, atol=tol)


@pytest.mark.parametrize("sr_in", [8000, 16000, 22050, 44100, 48000])
def test_resampled_tone_matches_analytic(tmp_path, sr_in):
    p = tmp_path / "t.wav"
    p.write_bytes(wav_bytes(tone(1000, sr_in, 0.5)[:, None], sr_in, "f32"))
    y = read_wav(p, 24000)
    assert abs(y.size - 12000) <= 1
    ref = tone(1000, 24000, 0.5)[: y.size]
    core = slice(400, y.size - 400)  # away from the edges
    assert np.abs(y[core] - ref[core]).max() < 2e-3


def test_resampler_rejects_aliases_and_keeps_passband():
    hi = tone(15000, 48000, 0.5)  # above the 12 kHz Nyquist of 24 kHz
    y = resample(hi, 48000, 24000)
    assert np.sqrt(np.mean(y[200:-200] ** 2)) < 1e-3 * np.sqrt(np.mean(hi**2))
    lo = tone(5000, 48000, 0.5)
    z = resample(lo, 48000, 24000)
    assert abs(np.sqrt(np.mean(z[200:-200] ** 2)) / np.sqrt(np.mean(lo**2)) - 1) < 1e-2
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(resample(x, 24000, 24000), x)


def test_write_then_read_round_trip_mono_and_two_channels(tmp_path):
    x = tone(300, 24000, 0.2).astype(np.float32)
    write_wav(tmp_path / "m.wav", x)
    np.testing.assert_allclose(read_wav(tmp_path / "m.wav"), x, atol=1 / 32767)
    both = np.stack([x, -x * 0.5])
    write_wav(tmp_path / "s.wav", both, 24000)
    data = (tmp_path / "s.wav").read_bytes()
    assert struct.unpack("<H", data[22:24])[0] == 2  # two channels
    np.testing.assert_allclose(read_wav(tmp_path / "s.wav"), (x - 0.5 * x) / 2, atol=1 / 32767)
    write_wav(tmp_path / "c.wav", np.array([2.0, -2.0], np.float32))  # clipped, not wrapped
    np.testing.assert_allclose(read_wav(tmp_path / "c.wav"), [32767 / 32768, -32767 / 32768])


def test_clear_errors(tmp_path):
    cases = {
        "missing.wav": None,
        "text.wav": b"hello, I am not audio",
        "empty.wav": b"",
        "nodata.wav": wav_bytes(np.zeros((0, 1)), 24000, "i16"),
        "adpcm.wav": wav_bytes(np.zeros((10, 1)), 24000, "i16").replace(
            struct.pack("<HH", 1, 1), struct.pack("<HH", 2, 1), 1),
    }
    good = wav_bytes(tone(440, 24000, 0.1)[:, None], 24000, "i16")
    cases["truncated.wav"] = good[: len(good) // 2]
    expect = {"missing.wav": "cannot read", "text.wav": "not a WAV", "empty.wav": "not a WAV",
              "nodata.wav": "no audio", "adpcm.wav": "unsupported", "truncated.wav": "truncated"}
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(AudioFileError, match=expect[name]) as err:
            read_wav(tmp_path / name)
        assert name in str(err.value)
        assert isinstance(err.value, ValueError)


def test_interoperates_with_the_stdlib_wave_module(tmp_path):
    import wave

    x = tone(523, 16000, 0.25, amp=0.4)
    with wave.open(str(tmp_path / "std.wav"), "wb") as w:  # written by another tool
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.round(x * 32767).astype("<i2").tobytes())
    y = read_wav(tmp_path / "std.wav", 24000)
    assert abs(y.size - 6000) <= 1
    core = slice(300, y.size - 300)
    assert np.abs(y[core] - tone(523, 24000, 0.25, amp=0.4)[: y.size][core]).max() < 2e-3
    write_wav(tmp_path / "ours.wav", np.stack([y, y]), 24000)
    with wave.open(str(tmp_path / "ours.wav"), "rb") as r:  # and ours is read by it
        assert (r.getnchannels(), r.getsampwidth(), r.getframerate(), r.getnframes()) == (
            2, 2, 24000, y.size)
