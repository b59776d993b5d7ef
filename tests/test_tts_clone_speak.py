"""`cli.py speak --voice RECORDING.wav` end to end on `tiny_repo --kind tts-clone`: the recording
becomes an audio prefix, the written audio follows the text and leaves the prefix out (as PT's
`simple_generate` slices it), and voice mistakes are one clear error line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moshi_mlx.audio.wav import read_wav
from tests.helpers import make_cached_repo, one_line_error, run_cli, speechlike, write_wav

LONG = ("Hello there, how are you doing today? The sun is shining over the hills, and the river "
        "runs quietly past the old mill.")


@pytest.fixture(scope="module")
def clone_repo(tmp_path_factory):
    from moshi_mlx.testing.tiny_repo import main

    out = tmp_path_factory.mktemp("tts_clone")
    assert main([str(out), "--kind", "tts-clone"]) == 0
    return out


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """2 s stereo at 48 kHz: the prefix path mixes to mono and resamples to 24 kHz."""
    pcm = speechlike(2.0, 48000)
    both = np.stack([pcm, 0.5 * pcm], axis=1).reshape(-1)
    return write_wav(tmp_path_factory.mktemp("voice") / "voice.wav", both, 48000, channels=2)


def test_cloned_voice_audio_follows_the_text(clone_repo, recording, tmp_path, capsys,
                                            monkeypatch):
    """The second run names a recording of kyutai/tts-voices (offline, from the hub cache): for a
    cloning model the name is the file itself, without the embedding suffix."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    name = "expresso/happy.wav"
    snap = make_cached_repo(tmp_path / "hub", "kyutai/tts-voices", {})
    (snap / "expresso").mkdir()
    (snap / name).write_bytes(recording.read_bytes())
    lengths = []
    for i, (text, voice) in enumerate([("Hello there.", recording), (LONG, name)]):
        out = tmp_path / f"{i}.wav"
        rc, stdout, err = run_cli(capsys, "speak", text, "--model-dir", clone_repo, "--voice",
                                  voice, "-o", out, "--temp", "0")
        assert rc == 0, err
        assert text in stdout and f"wrote {out}" in stdout
        pcm = read_wav(out)
        assert len(pcm) % 1920 == 0 and np.isfinite(pcm).all() and np.abs(pcm).max() > 1e-3
        lengths.append(len(pcm))
    assert 0 < lengths[0] < lengths[1]


def test_prefix_is_fed_decoded_and_left_out(clone_repo, recording):
    """The prefix's codes are the first frames the model emits (and Mimi decodes, for its state);
    the result is exactly the decoded frames after the prefix and PT's two dropped frames, up to
    the end of the text: (end_step - P) frames of 1920 samples."""
    from moshi_mlx.sampling import GREEDY
    from moshi_mlx.tts.prefix import load_voice_prefix
    from moshi_mlx.tts.speak import load_tts, speak

    model = load_tts(clone_repo)
    prefix = load_voice_prefix(model.codec, recording)
    P = prefix.shape[1]
    assert P == 2.0 * 12.5 - 2  # 25 frames of 80 ms, Mimi's last two dropped
    decoded_codes, decoded_pcm = [], []
    codec_decode = model.codec.decode_step

    def recording_decode(codes, state):
        pcm = codec_decode(codes, state)
        decoded_codes.append(np.asarray(codes)[0, :, 0])
        decoded_pcm.append(np.clip(pcm[0, 0], -1.0, 1.0))
        return pcm

    model.codec.decode_step = recording_decode
    res = speak(model, "Hello there, the fox jumps.", recording, cfg_coef=2.0,
                text_sampler=GREEDY, audio_sampler=GREEDY)
    np.testing.assert_array_equal(np.stack(decoded_codes[:P], axis=1), prefix[1:])
    assert res.end_step is not None and res.transcript[0][1] >= P  # the text starts after it
    assert len(res.pcm) == (res.end_step - P) * 1920
    np.testing.assert_array_equal(res.pcm, np.concatenate(decoded_pcm[2 + P:2 + res.end_step]))
    model.codec.decode_step = codec_decode
    plain = speak(model, "Hello there, the fox jumps.", None, cfg_coef=2.0, text_sampler=GREEDY,
                  audio_sampler=GREEDY)
    assert plain.pcm.shape != res.pcm.shape or not np.array_equal(plain.pcm, res.pcm)


def test_voice_mistakes_are_one_line(clone_repo, recording, tmp_path, capsys):
    from moshi_mlx.testing.tiny_repo import main

    def speak(repo, voice):
        return run_cli(capsys, "speak", "Hi.", "--model-dir", repo, "--voice", voice,
                       "-o", tmp_path / "x.wav")

    rc, _, err = speak(clone_repo, tmp_path / "voice.safetensors")
    assert "clones a voice from a recording" in one_line_error(rc, err)
    short = write_wav(tmp_path / "short.wav", speechlike(0.1, 24000), 24000)
    rc, _, err = speak(clone_repo, short)
    assert "too short" in one_line_error(rc, err)
    (tmp_path / "fake.wav").write_text("not audio")
    rc, _, err = speak(clone_repo, tmp_path / "fake.wav")
    assert "fake.wav" in one_line_error(rc, err)
    multi = tmp_path / "multistream"
    multi.mkdir()
    (multi / "config.json").write_text(json.dumps(
        {"model_type": "tts", "tts_config": {"audio_delay": 1.28, "multistream": True}}))
    rc, _, err = speak(multi, recording)
    assert "multistream TTS models are not supported" in one_line_error(rc, err)
    tts = tmp_path / "tts"
    assert main([str(tts), "--kind", "tts"]) == 0
    capsys.readouterr()
    rc, _, err = speak(tts, recording)
    assert "needs a model conditioned by audio prefix" in one_line_error(rc, err)
