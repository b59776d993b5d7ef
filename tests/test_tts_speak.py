"""`cli.py speak` end to end on `tiny_repo --kind tts`: wav files whose length follows the text,
text from an argument, a file and standard input, clear errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from moshi_mlx.audio.wav import read_wav
from tests.helpers import make_cached_repo, one_line_error


@pytest.fixture(scope="module")
def tts_repo(tiny_tts_repo):
    return tiny_tts_repo


def _speak(args: list[str]) -> int:
    from cli import main

    return main(["speak", *args])


def test_tiny_repo_layout(tts_repo):
    cfg = json.loads((tts_repo / "config.json").read_text())
    assert cfg["model_type"] == "tts" and cfg["tts_config"]["audio_delay"] == 1.28
    for key in ("moshi_name", "mimi_name", "tokenizer_name"):
        assert (tts_repo / cfg[key]).is_file()
    assert len(list((tts_repo / "voices").glob("*.00000000@0.safetensors"))) == 1


def test_longer_text_gives_longer_audio(tts_repo, tmp_path, capsys):
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    assert _speak(["Hello there.", "--model-dir", str(tts_repo), "-o", str(short),
                   "--temp", "0"]) == 0
    text = ("Hello there, how are you doing today? The sun is shining over the hills, and the "
            "river runs quietly past the old mill.")
    (tmp_path / "text.txt").write_text(text)
    assert _speak(["--text-file", str(tmp_path / "text.txt"), "--model-dir", str(tts_repo),
                   "-o", str(long), "--temp", "0"]) == 0
    out = capsys.readouterr().out
    assert text in out and f"wrote {long}" in out  # every word, in order, as it is started
    a, b = read_wav(short), read_wav(long)
    assert 0 < len(a) < len(b) and np.isfinite(b).all() and np.abs(b).max() > 1e-3
    # Whole frames (end_step x 1920 samples, as PT's simple_generate), and the long text runs
    # well past the tiny model's 50-step context (rotating KV cache).
    assert len(b) % 1920 == 0 and len(b) > 2 * 50 * 1920


def test_text_from_standard_input(tts_repo, tmp_path, monkeypatch, capsys):
    out = tmp_path / "stdin.wav"
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there,\nhow are you?\n"))
    assert _speak(["-", "--model-dir", str(tts_repo), "-o", str(out)]) == 0
    assert "how are you?" in capsys.readouterr().out
    assert len(read_wav(out)) > 10 * 1920


@pytest.mark.parametrize("args, message", [
    (["   "], "the text is empty"),
    (["Hi.", "--cfg", "2.2"], "--cfg must be one of"),
    (["Hi.", "--voice", "nobody"], "hf download kyutai/tts-voices nobody.00000000@0.safetensors"),
    ([], "give the text"),
    (["Hi.", "--output-device", "0"], "cannot be combined with --output"),
])
def test_user_errors_are_one_line(tts_repo, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an unknown voice is looked up in the hub cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    rc = _speak([*args, "--model-dir", str(tts_repo), "-o", str(tmp_path / "x.wav")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and message in err and "Traceback" not in err


def test_dropped_conditions_for_real_cfg():
    """Real CFG's second half: LUT values None, voices zero and masked (PT dropout_all_conditions)."""
    import mlx.core as mx

    from moshi_mlx.tts.speak import _with_dropped

    assert _with_dropped(["2.0"]) == ["2.0", None]
    t, m = _with_dropped((mx.ones((1, 3, 2)), mx.array([[True, True, False]])))
    np.testing.assert_array_equal(np.array(t), [[[1, 1]] * 3, [[0, 0]] * 3])
    np.testing.assert_array_equal(np.array(m), [[True, True, False], [False, False, False]])


def test_voice_from_the_hub_cache(tts_repo, tmp_path, capsys, monkeypatch):
    """A voice that is neither a file nor in DIR/voices comes from kyutai/tts-voices through the
    hub cache: offline, a cached one loads (the same voice as the local one gives the same audio);
    an uncached one is one error line naming it and the download command."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    name = "expresso/happy.wav"
    snap = make_cached_repo(tmp_path / "hub", "kyutai/tts-voices", {})
    local = next((tts_repo / "voices").glob("*.safetensors"))
    (snap / "expresso").mkdir()
    (snap / f"{name}.00000000@0.safetensors").write_bytes(local.read_bytes())
    wavs = []
    for voice in ("default.wav", name):
        wavs.append(tmp_path / f"{len(wavs)}.wav")
        assert _speak(["Hello there.", "--model-dir", str(tts_repo), "-o", str(wavs[-1]),
                       "--temp", "0", "--voice", voice]) == 0
    a, b = (read_wav(w) for w in wavs)
    assert len(a) > 0 and np.array_equal(a, b)
    capsys.readouterr()
    rc = _speak(["Hi.", "--model-dir", str(tts_repo), "-o", str(tmp_path / "x.wav"),
                 "--voice", "expresso/sad.wav"])
    line = one_line_error(rc, capsys.readouterr().err)
    assert "'expresso/sad.wav'" in line and "offline" in line
    assert line.endswith("hf download kyutai/tts-voices expresso/sad.wav.00000000@0.safetensors")


def test_streamed_text_is_spoken_before_the_rest_arrives(tts_repo):
    """Text arriving in pieces (a pipe): the first piece's audio comes out completely while the
    second piece has not been written yet, and equals the audio of that piece spoken alone
    (same greedy tokens until the closed script marks its end)."""
    import threading

    from moshi_mlx.sampling import Sampler
    from moshi_mlx.tts.speak import find_voice, load_tts, speak

    model = load_tts(tts_repo)
    voice = find_voice(model, None)
    greedy = {"text_sampler": Sampler(0.0), "audio_sampler": Sampler(0.0), "seed": 0}
    first = "Hello there, this is the first line."
    alone = speak(model, first, voice, **greedy)
    n_first = len(alone.pcm) // 1920
    assert n_first > 10

    frames: list[np.ndarray] = []
    out_before_second = threading.Event()

    def on_audio(pcm: np.ndarray) -> None:
        frames.append(pcm)
        if len(frames) >= n_first:
            out_before_second.set()

    waited: list[bool] = []

    def pieces():
        yield first + "\n"
        waited.append(out_before_second.wait(timeout=120))
        yield "And this line comes later.\n"

    res = speak(model, pieces(), voice, on_audio=on_audio, **greedy)
    assert waited == [True], "the first line's audio was held back until more text came"
    # Equal until the closed script's end marker (fed at its end_step) reaches the audio: frame
    # f holds codebooks sampled up to step f + 2 and audio index j is frame j + delay + 2.
    same = alone.end_step - model.delay_steps - 4
    assert same > 10
    np.testing.assert_array_equal(np.concatenate(frames[:same]), alone.pcm[:same * 1920])
    words = [w for w, _ in res.transcript]
    assert words[-1] == "later." and res.end_step is not None
    assert len(res.pcm) > len(alone.pcm) + 4 * 1920
def _tts_hub(tmp_path, monkeypatch, tts_repo, repo: str, names=None) -> None:
    """An offline hub cache holding `repo` (the tiny repo's files, or only `names`; no voices
    directory, as on the hub) and Kyutai's default voice in kyutai/tts-voices."""
    from moshi_mlx.tts.voices import DEFAULT_VOICE

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    files = {p.name: p.read_bytes() for p in tts_repo.iterdir()
             if p.is_file() and (names is None or p.name in names)}
    make_cached_repo(tmp_path / "hub", repo, files)
    voices = make_cached_repo(tmp_path / "hub", "kyutai/tts-voices", {})
    (voices / "expresso").mkdir()
    local = next((tts_repo / "voices").glob("*.safetensors"))
    (voices / f"{DEFAULT_VOICE}.00000000@0.safetensors").write_bytes(local.read_bytes())


def test_speak_by_repo_name_from_the_offline_cache(tts_repo, tmp_path, monkeypatch, capsys):
    """Without --model-dir, speak uses kyutai/tts-1.6b-en_fr through the hub cache (the files
    its config.json names) and Kyutai's default voice from kyutai/tts-voices: the same audio as
    the directory with the same voice."""
    _tts_hub(tmp_path, monkeypatch, tts_repo, "kyutai/tts-1.6b-en_fr")
    hub, local = tmp_path / "hub.wav", tmp_path / "local.wav"
    assert _speak(["Hello there.", "-o", str(hub), "--temp", "0"]) == 0
    assert _speak(["Hello there.", "--model-dir", str(tts_repo), "-o", str(local),
                   "--temp", "0"]) == 0
    assert f"wrote {hub}" in capsys.readouterr().out
    a, b = read_wav(hub), read_wav(local)
    assert len(a) > 0 and np.array_equal(a, b)


def test_speak_offline_without_the_repo_is_one_error_line(tts_repo, tmp_path, monkeypatch,
                                                          capsys):
    _tts_hub(tmp_path, monkeypatch, tts_repo, "kyutai/tts-1.6b-en_fr")
    rc = _speak(["Hi.", "--hf-repo", "someone/tts", "-o", str(tmp_path / "x.wav")])
    line = one_line_error(rc, capsys.readouterr().err)
    assert "offline (HF_HUB_OFFLINE=1): someone/tts is not in the local cache" in line
    # Without its config.json the TTS row's names are asked for.
    assert line.endswith("hf download someone/tts config.json dsm_tts_1e68beda@240.safetensors "
                         "tokenizer-e351c8d8-checkpoint125.safetensors "
                         "tokenizer_spm_8k_en_fr_audio.model")
    # With config.json cached, exactly the files it names (the tiny LM's) are missing.
    cfg = json.loads((tts_repo / "config.json").read_text())
    _tts_hub(tmp_path / "b", monkeypatch, tts_repo, "me/tts",
             names={"config.json", cfg["mimi_name"], cfg["tokenizer_name"]})
    rc = _speak(["Hi.", "--hf-repo", "me/tts", "-o", str(tmp_path / "x.wav")])
    line = one_line_error(rc, capsys.readouterr().err)
    assert line.endswith(f"hf download me/tts {cfg['moshi_name']}")
    assert not (tmp_path / "x.wav").exists()


def _wav(tts_repo, tmp_path, *args: str, text: str = "Hello there.") -> np.ndarray:
    out = tmp_path / f"{len(list(tmp_path.glob('*.wav')))}.wav"
    assert _speak([text, "--model-dir", str(tts_repo), "-o", str(out), *args]) == 0
    return read_wav(out)


def test_sampling_flags_reach_the_samplers(tts_repo, tmp_path):
    """Top-k 1 is greedy at any temperature: each flag pair, set so, gives the greedy bytes, and
    a temperature alone changes them; --temp sets both temperatures."""
    greedy = _wav(tts_repo, tmp_path, "--temp", "0")
    same = {
        "both temperatures 0": ("--text-temp", "0", "--audio-temp", "0"),
        "audio top-k 1": ("--text-temp", "0", "--audio-temp", "0.9", "--audio-top-k", "1"),
        "text top-k 1": ("--text-temp", "5", "--text-top-k", "1", "--audio-temp", "0"),
    }
    for what, args in same.items():
        assert np.array_equal(_wav(tts_repo, tmp_path, *args), greedy), what
    hot = _wav(tts_repo, tmp_path, "--text-temp", "0", "--audio-temp", "0.9")
    assert not (len(hot) == len(greedy) and np.array_equal(hot, greedy))


def test_default_temperatures_come_from_the_checkpoint(tts_repo, tmp_path):
    """The tiny repo says 0.6 (as tts-1.6b-en_fr); a copy whose lm_gen_config says 0 is greedy."""
    cold = _wav(tts_repo, tmp_path, "--temp", "0")
    assert not np.array_equal(_wav(tts_repo, tmp_path), cold)
    copy = tmp_path / "cold"
    copy.mkdir()
    for p in tts_repo.iterdir():
        (copy / p.name).symlink_to(p)
    (copy / "config.json").unlink()
    cfg = json.loads((tts_repo / "config.json").read_text())
    cfg["lm_gen_config"] = {"temp": 0.0, "text_temp": 0.0}
    (copy / "config.json").write_text(json.dumps(cfg))
    assert np.array_equal(_wav(copy, tmp_path), cold)


def test_temp_with_a_per_stream_temperature_is_an_error(tts_repo, tmp_path, capsys):
    rc = _speak(["Hi.", "--model-dir", str(tts_repo), "-o", str(tmp_path / "x.wav"),
                 "--temp", "0", "--audio-temp", "0.5"])
    assert "--temp sets both temperatures" in one_line_error(rc, capsys.readouterr().err)


def test_ctrl_c_writes_the_audio_made_so_far(tts_repo, tmp_path, monkeypatch, capsys):
    """Ctrl-C at step 40: one line, exit 130, and the wav holds the 40 - 20 (lag_steps) frames
    made by then, equal to the start of the uninterrupted run."""
    from moshi_mlx.tts.generate import TtsGen

    text = "One two three four five six seven eight nine ten."
    full = _wav(tts_repo, tmp_path, "--temp", "0", text=text)
    step = TtsGen.step

    def interrupted(self):
        if self.step_count == 40:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(TtsGen, "step", interrupted)
    capsys.readouterr()
    out = tmp_path / "cut.wav"
    rc = _speak([text, "--model-dir", str(tts_repo), "-o", str(out), "--temp", "0"])
    err = capsys.readouterr().err
    assert rc == 130 and err == f"interrupted: wrote {out} with 1.60 s of audio\n"
    cut = read_wav(out)
    assert len(cut) == 20 * 1920 and np.array_equal(cut, full[:len(cut)])


def test_ctrl_c_signal_while_waiting_for_standard_input(tts_repo, tmp_path):
    """A real SIGINT to `speak -` that waits for more text on standard input: exit 130, one line
    on stderr, and the wav of what was said, equal to the start of the run whose text ended."""
    import os
    import select
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT

    text = "One two three four five six seven eight nine ten eleven twelve."
    full = _wav(tts_repo, tmp_path, "--temp", "0", text=text)
    out = tmp_path / "cut.wav"
    p = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "speak", "-", "--model-dir",
                          str(tts_repo), "-o", str(out), "--temp", "0"], cwd=ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        p.stdin.write((text + "\n").encode())
        p.stdin.flush()  # and kept open: the model pads, then waits for more text
        seen, deadline = b"", time.monotonic() + 120
        while b"twelve." not in seen and time.monotonic() < deadline and p.poll() is None:
            if select.select([p.stdout], [], [], 1.0)[0]:
                seen += os.read(p.stdout.fileno(), 1024)
        assert b"twelve." in seen, seen
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    lines = err.decode().strip().splitlines()
    assert p.returncode == 130 and len(lines) == 1, err
    assert lines[0].startswith(f"interrupted: wrote {out} with ")
    cut = read_wav(out)
    assert 0 < len(cut) < len(full) and len(cut) % 1920 == 0
    # Another process: Mimi's float sums may round one 16-bit step differently; the tokens agree.
    np.testing.assert_allclose(cut, full[:len(cut)], atol=1e-4)
