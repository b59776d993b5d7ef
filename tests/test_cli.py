"""cli.py end to end with the tiny model: file mode, bench, forwarding, and every user mistake.

The live chat through a real PulseAudio server is in test_cli_chat.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import cli
from moshi_mlx.checkpoint import MIMI_FILE
from tests.helpers import one_line_error, read_wav, run_cli, speechlike, write_wav


@pytest.fixture(scope="module")
def user_wav(tmp_path_factory) -> Path:
    """1 s of stereo 44.1 kHz: exercises the resampler and downmix on the way in."""
    d = tmp_path_factory.mktemp("wav")
    x = speechlike(1.0, 44100)
    return write_wav(d / "user.wav", np.stack([x, 0.5 * x], 1).reshape(-1), 44100, channels=2)


def test_run_file_to_file_with_transcript(capsys, tmp_path, tiny_repo, user_wav):
    out, tr = tmp_path / "out.wav", tmp_path / "t.json"
    rc, stdout, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "-i", user_wav, "-o", out,
                              "--transcript", tr, "--seed", 7, "--pad-seconds", 1.0)
    assert rc == 0, err
    audio, rate, ch = read_wav(out)
    frames = 13 + 13  # ceil(1 s / 80 ms) + 1 s of padding
    assert (rate, ch, audio.shape[1]) == (24000, 1, frames * 1920)
    assert np.sqrt(np.mean(audio[0, 1920:] ** 2)) > 0.01  # Moshi's (random) voice is there
    data = json.loads(tr.read_text())
    assert data["seed"] == 7 and data["stats"]["frames"] == frames
    assert data["model"]["name"] == tiny_repo.name and data["settings"]["text_temp"] == 0.7
    assert data["stats"]["frame_ms_p50"] > 0 and data["stats"]["late_frames"] == 0
    assert all(p["time_s"] == pytest.approx(p["frame"] * 0.08) for p in data["pieces"])
    assert f"wrote {out}" in stdout


def test_run_is_deterministic_per_seed(capsys, tmp_path, tiny_repo, user_wav):
    outs = []
    for i, seed in enumerate((3, 3, 4)):
        out = tmp_path / f"o{i}.wav"
        rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "-i", user_wav, "-o", out,
                             "--seed", seed, "--pad-seconds", 0.5)
        assert rc == 0, err
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]


def first_differing_frame(a: np.ndarray, b: np.ndarray) -> int | None:
    diff = np.abs(a.reshape(-1, 1920) - b.reshape(-1, 1920)).max(axis=1) > 0
    return int(np.argmax(diff)) if diff.any() else None


def semantic_codes(model_dir: Path, pcm: np.ndarray) -> np.ndarray:
    """The user's delay-0 (semantic) Mimi code of each frame, streamed as `run` encodes it."""
    from moshi_mlx.codec import load_mimi

    codec = load_mimi(model_dir, num_codebooks=8)
    state = codec.init_state(1)
    return np.array([codec.encode_step(pcm[i:i + 1920].reshape(1, 1, -1), state)[0, 0, 0]
                     for i in range(0, len(pcm), 1920)])


@pytest.mark.parametrize("f", [6, 15])
def test_run_answers_input_frame_f_at_output_frame_f(capsys, tmp_path, tiny_repo, f):
    """Two inputs equal up to frame f and different from frame f on (greedy, same seed): the
    outputs first differ at frame f, in both schedules, and the schedules write the same file.

    Moshi reads the user's semantic code (delay 0) of frame f in step f and the acoustic codes
    (delay 1) in step f+1, as PyTorch does; so the second input is noise chosen so that the
    semantic code of frame f changes (the tiny Mimi sometimes codes a frame the same either way).
    """
    x = speechlike(2.0, 24000)
    sem_x = semantic_codes(tiny_repo, x)
    for seed in range(20):
        y = x.copy()
        y[f * 1920:] = 0.5 * np.random.default_rng(seed).standard_normal(len(x) - f * 1920)
        if semantic_codes(tiny_repo, y)[f] != sem_x[f]:
            break
    else:
        raise AssertionError("no noise changed the semantic code of frame f")
    ins = [write_wav(tmp_path / f"in{i}.wav", v, 24000) for i, v in enumerate((x, y))]
    got = {}
    for sched in ("serial", "pipelined"):
        for i, wav in enumerate(ins):
            out = tmp_path / f"{sched}{i}.wav"
            rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "--input", wav,
                                 "--output", out, "--text-temp", 0, "--audio-temp", 0,
                                 "--seed", 3, "--pad-seconds", 0, "--schedule", sched)
            assert rc == 0, err
            got[sched, i] = out.read_bytes()
            audio, _, _ = read_wav(out)
            assert audio.shape[1] == 25 * 1920  # one output frame per input frame
        a, b = (read_wav(tmp_path / f"{sched}{i}.wav")[0] for i in (0, 1))
        assert first_differing_frame(a, b) == f
    assert got["serial", 0] == got["pipelined", 0] and got["serial", 1] == got["pipelined", 1]


def test_run_with_quantized_model(capsys, tmp_path, tiny_repos, user_wav):
    out = tmp_path / "q.wav"
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repos("q4"), "-i", user_wav, "-o", out,
                         "--pad-seconds", 0.2)
    assert rc == 0, err and read_wav(out)[0].shape[1] == 16 * 1920


def test_bench_prints_numbers(capsys, tmp_path, tiny_repo):
    js = tmp_path / "b.json"
    rc, out, err = run_cli(capsys, "bench", "--model-dir", tiny_repo, "--frames", 5, "--json", js)
    assert rc == 0, err
    assert "frames/s" in out and "p95" in out and "peak RSS" in out
    r = json.loads(js.read_text())
    assert r["frames"] == 5 and r["frames_per_s"] > 0 and r["frame_ms_p95"] >= r["frame_ms_p50"]
    assert r["schedule"] in ("serial", "pipelined") and "schedule" in out
    # the echo canceller's cost per frame (pyaec is a dependency on this platform)
    assert 0 < r["echo_ms_p50"] < 80 and "echo       canceller" in out


@pytest.mark.parametrize("schedule", ["serial", "pipelined"])
def test_bench_takes_the_schedule(capsys, tmp_path, tiny_repo, schedule):
    js = tmp_path / "b.json"
    rc, out, err = run_cli(capsys, "bench", "--model-dir", tiny_repo, "--frames", 4,
                           "--schedule", schedule, "--json", js)
    assert rc == 0, err
    r = json.loads(js.read_text())
    assert r["schedule"] == schedule and r["schedule_reason"] == "--schedule"
    assert r["frames_per_s"] > 0 and r["encode_ms_p50"] > 0 and r["decode_ms_p50"] > 0


def test_quantize_commands_forward_argv(capsys, monkeypatch):
    import quantize.cli as qcli

    seen = []
    monkeypatch.setattr(qcli, "main_quantize", lambda argv: seen.append(("q", argv)) or 0)
    monkeypatch.setattr(qcli, "main_report", lambda argv: seen.append(("r", argv)) or 3)
    assert cli.main(["quantize", "SRC", "OUT", "--recipe", "q4"]) == 0
    assert cli.main(["quantize-report", "OUT", "--reference", "SRC"]) == 3
    assert seen == [("q", ["SRC", "OUT", "--recipe", "q4"]), ("r", ["OUT", "--reference", "SRC"])]


# --- user mistakes: one line on stderr, non-zero exit, no traceback ---------------------------
def test_rustymimi_backend_missing(capsys, tmp_path, monkeypatch, tiny_repo, user_wav):
    """Where rustymimi has no wheel (CPython 3.14), the backend is a one-line error, given before
    the LM is loaded."""
    import moshi_mlx.loading

    monkeypatch.setitem(sys.modules, "rustymimi", None)  # `import rustymimi` raises ImportError
    monkeypatch.setattr(moshi_mlx.loading, "load_lm", lambda *a, **k: pytest.fail("LM loaded"))
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "--mimi-backend", "rustymimi",
                         "-i", user_wav, "-o", tmp_path / "o.wav")
    line = one_line_error(rc, err)
    assert "rustymimi Mimi backend is not installed" in line and "--mimi-backend mlx" in line


def test_unknown_model_name(capsys, tmp_path, user_wav):
    rc, _, err = run_cli(capsys, "run", "--model", "moshiki", "-i", user_wav, "-o", tmp_path / "o.wav")
    line = one_line_error(rc, err)
    assert "moshiki" in line and "moshiko" in line and "moshika" in line


def test_offline_and_uncached(capsys, tmp_path, monkeypatch, user_wav):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, _, err = run_cli(capsys, "run", "--model", "moshika", "--quant", "bf16", "-i", user_wav,
                         "-o", tmp_path / "o.wav")
    line = one_line_error(rc, err)
    assert "kyutai/moshika-mlx-bf16" in line and "15.40 GB" in line and "hf download" in line


def test_interrupted_download(capsys, tmp_path, monkeypatch, user_wav):
    import huggingface_hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def broken(repo, filename, **kw):
        raise ConnectionResetError("Connection reset by peer")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken)
    rc, _, err = run_cli(capsys, "run", "-i", user_wav, "-o", tmp_path / "o.wav")
    assert "again to resume" in one_line_error(rc, err)


@pytest.mark.parametrize("content", [b"", b"not a wav file at all", b"RIFF\x00\x00\x00\x00WAVE"])
def test_unreadable_or_empty_wav(capsys, tmp_path, tiny_repo, content):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "-i", bad, "-o", tmp_path / "o.wav")
    assert "bad.wav" in one_line_error(rc, err)


def test_wav_with_no_samples(capsys, tmp_path, tiny_repo):
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "-i", empty, "-o",
                         tmp_path / "o.wav")
    assert "empty.wav" in one_line_error(rc, err)


def test_missing_input_file_and_bad_values(capsys, tmp_path, tiny_repo):
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "-i", tmp_path / "none.wav",
                         "-o", tmp_path / "o.wav")
    assert "none.wav" in one_line_error(rc, err)
    rc, _, err = run_cli(capsys, "run", "--model-dir", tmp_path / "nodir", "-i", tmp_path,
                         "-o", tmp_path / "o.wav")
    assert rc == 1
    rc, _, err = run_cli(capsys, "bench", "--model-dir", tiny_repo, "--frames", 0)
    assert "--frames" in one_line_error(rc, err)


def test_missing_sound_device(capsys, tiny_repo):
    rc, _, err = run_cli(capsys, "chat", "--model-dir", tiny_repo, "--input-device", "no-such-mic",
                         "--duration", 1)
    line = one_line_error(rc, err)
    assert "no-such-mic" in line or "no sound devices" in line


def test_bad_tokenizer_and_unwritable_output(capsys, tmp_path, tiny_repo, user_wav):
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"junk")
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "--tokenizer", junk, "-i",
                         user_wav, "-o", tmp_path / "o.wav")
    assert "junk.model" in one_line_error(rc, err)
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "-i", user_wav, "-o",
                         tmp_path / "missing" / "o.wav")
    assert "does not exist" in one_line_error(rc, err)


def test_explicit_lm_weight_overrides_the_dir(capsys, tmp_path, tiny_repos, user_wav):
    """A q8 LM file with the q4 repo's Mimi/tokenizer/config: quantization comes from the tensors."""
    out, tr = tmp_path / "o.wav", tmp_path / "t.json"
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repos("q4"), "--lm-weight",
                         tiny_repos("q8") / "model.q8.safetensors", "-i", user_wav, "-o", out,
                         "--transcript", tr, "--pad-seconds", 0.2)
    assert rc == 0, err
    model = json.loads(tr.read_text())["model"]
    assert model["precision"] == "q8" and model["lm_weight"].endswith("model.q8.safetensors")


def test_offline_cached_repo_runs(capsys, tmp_path, monkeypatch, tiny_repo, user_wav):
    from tests.helpers import make_cached_repo

    files = {p.name: p.read_bytes() for p in tiny_repo.iterdir()}
    make_cached_repo(tmp_path / "hf" / "hub", "me/tiny-moshi", files)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, tr = tmp_path / "o.wav", tmp_path / "t.json"
    rc, _, err = run_cli(capsys, "run", "--hf-repo", "me/tiny-moshi", "-i", user_wav, "-o", out,
                         "--transcript", tr, "--pad-seconds", 0.2)
    assert rc == 0, err
    assert json.loads(tr.read_text())["model"]["source"] == "me/tiny-moshi"


@pytest.mark.slow
def test_both_mimi_backends_give_the_same_conversation(capsys, tmp_path, tiny_repo_full_mimi):
    """Real-size random Mimi: `--mimi-backend rustymimi` and our MLX Mimi, same seed, same output."""
    pytest.importorskip("rustymimi", reason="rustymimi has no wheel for this Python")
    user = write_wav(tmp_path / "u.wav", speechlike(0.4, 24000), 24000)
    outs = {}
    for backend in ("rustymimi", "mlx"):
        out = tmp_path / f"{backend}.wav"
        rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo_full_mimi, "--mimi-backend",
                             backend, "-i", user, "-o", out, "--pad-seconds", 0.3, "--seed", 5)
        assert rc == 0, err
        outs[backend] = read_wav(out)[0][0]
    assert outs["mlx"].shape == (9 * 1920,)  # 5 frames of user + ceil(0.3 s) = 4 of silence
    assert np.sqrt(np.mean(outs["mlx"][1920:] ** 2)) > 0.01
    # Same codes all the way (the LM samples from identical user codes): audio within 16-bit steps.
    np.testing.assert_allclose(outs["rustymimi"], outs["mlx"], atol=2e-4)


def test_negative_values_and_directory_outputs(capsys, tmp_path, tiny_repo, user_wav):
    """Each mistake names its flag on one line (was: 'negative dimensions are not allowed', a
    silently accepted jitter buffer of -2, and '[Errno 21] Is a directory')."""
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "-i", user_wav, "-o",
                         tmp_path / "o.wav", "--pad-seconds", -3)
    assert "--pad-seconds" in one_line_error(rc, err)
    rc, _, err = run_cli(capsys, "chat", "--model-dir", tiny_repo, "--jitter-frames", -2,
                         "--duration", 1)
    assert "--jitter-frames" in one_line_error(rc, err)
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "-i", user_wav, "-o", tmp_path)
    assert "--output" in one_line_error(rc, err) and "directory" in err
    rc, _, err = run_cli(capsys, "chat", "--model-dir", tiny_repo, "--duration", 1,
                         "--transcript", tmp_path)
    assert "--transcript" in one_line_error(rc, err)


def test_bad_seed_and_unwritable_bench_json(capsys, tmp_path, tiny_repo, user_wav):
    """A negative seed was a TypeError traceback from MLX; a bad --json path failed after the run."""
    rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, "-i", user_wav, "-o",
                         tmp_path / "o.wav", "--seed", -5)
    assert "--seed" in one_line_error(rc, err)
    rc, out, err = run_cli(capsys, "bench", "--model-dir", tiny_repo, "--frames", 2, "--json",
                           tmp_path / "missing" / "b.json")
    assert "--json" in one_line_error(rc, err) and out == ""


def test_list_devices_without_any(capsys, monkeypatch):
    """No sound device at all: one error line (the listing used to be a blank line, exit 0)."""
    import sounddevice

    monkeypatch.setattr(sounddevice, "query_devices", lambda *a, **k: sounddevice.DeviceList())
    rc, out, err = run_cli(capsys, "chat", "--list-devices")
    assert "no sound devices" in one_line_error(rc, err) and out == ""


def test_hub_warnings_are_printed_once(tmp_path):
    """Without network, huggingface_hub warns at each retry; each warning used to appear twice
    (its own handler, then our root handler)."""
    import os
    import subprocess
    import sys

    code = ("import logging, cli\n"
            "from huggingface_hub.utils import logging as hf_logging\n"
            "hf_logging.get_logger('huggingface_hub.utils._http')\n"
            "cli.main(['run', '-i', 'missing.wav', '-o', 'o.wav'])\n"
            "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s')\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=Path(cli.__file__).parent,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MOSHI_MLX_BLAS": "reference"})
    assert p.stderr.count("Retrying in 1s") == 1, p.stderr


def test_unreadable_weight_files_are_named(capsys, tmp_path, tiny_repo, user_wav):
    """MLX's load errors ('[load] Unknown file format wav', truncated safetensors) now name the file."""
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"junk")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((tiny_repo / MIMI_FILE).read_bytes()[:100_000])
    for flag, path in (("--lm-weight", junk), ("--mimi-weight", cut)):
        rc, _, err = run_cli(capsys, "run", "--model-dir", tiny_repo, flag, path, "-i", user_wav,
                             "-o", tmp_path / "o.wav")
        assert path.name in one_line_error(rc, err)
