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
def tts_repo(tmp_path_factory):
    from moshi_mlx.testing.tiny_repo import main

    out = tmp_path_factory.mktemp("tts")
    assert main([str(out), "--kind", "tts"]) == 0
    return out


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
