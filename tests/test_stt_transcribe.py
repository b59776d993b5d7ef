"""`cli.py transcribe` and the `moshi_mlx.stt` API end to end with the tiny random STT repo.

Checks values: the CLI's JSON equals the Python API's words; streaming in odd-sized blocks equals
the file path; a batch of files equals each file alone; outputs (TXT/SRT) are exact renderings;
every user mistake is one `error:` line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from moshi_mlx.loading import read_weights
from moshi_mlx.stt import Transcriber, VadEvent, Word
from moshi_mlx.stt.outputs import to_srt, to_text
from moshi_mlx.stt.transcriber import Transcript
from moshi_mlx.weights.lm import detect_format
from tests.helpers import one_line_error, run_cli, speechlike, write_wav


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("stt_wav")
    a = speechlike(2.0, 24000, seed=1)
    b = speechlike(1.2, 44100, seed=2)
    return (write_wav(d / "a.wav", a, 24000),
            write_wav(d / "b.wav", np.stack([b, 0.3 * b], 1).reshape(-1), 44100, channels=2), a)


@pytest.fixture(scope="module")
def tr(tiny_stt_repo):
    return Transcriber.load(model_dir=tiny_stt_repo)


def test_tiny_stt_repo_has_the_real_layout(tiny_stt_repo, tr):
    cfg = json.loads((tiny_stt_repo / "config.json").read_text())
    assert cfg["model_type"] == "stt" and cfg["stt_config"]["audio_delay_seconds"] == 0.5
    assert cfg["mimi_name"] == "mimi-pytorch-e351c8d8@125.safetensors"
    assert cfg["tokenizer_name"] == "tokenizer_en_fr_audio_8000.model"
    assert (cfg["dep_q"], cfg["n_q"], cfg["extra_heads_num_heads"]) == (0, 32, 4)
    assert detect_format(read_weights(tiny_stt_repo / "model.safetensors")) == "torch"
    assert tr.has_vad and tr.codec.num_codebooks == 32


def words(t: Transcript) -> list[tuple[str, float, float]]:
    return [(w.text, w.start, w.stop) for w in t.words]


def test_cli_json_contract_equals_the_api(capsys, tmp_path, tiny_stt_repo, tr, wavs):
    out = tmp_path / "out.json"
    rc, stdout, err = run_cli(capsys, "transcribe", "--model-dir", tiny_stt_repo, "--input",
                              wavs[1], "--output", out)
    assert rc == 0, err
    data = json.loads(out.read_text())
    ref = tr.transcribe_file(wavs[1])
    assert [(w["text"], w["start"], w["stop"]) for w in data["words"]] == \
        [(w.text, round(w.start, 3), round(w.stop, 3)) for w in ref.words]
    assert len(data["words"]) >= 3
    times = [t for w in data["words"] for t in (w["start"], w["stop"])]
    # at most the trailing silence (delay + 1 s, rounded up to whole frames) minus the delay
    assert times == sorted(times) and times[-1] <= data["duration_s"] + 1.0 + 0.08
    assert data["duration_s"] == pytest.approx(1.2, abs=1e-3)
    assert data["model"]["vad_heads"] == 4 and data["settings"]["temp"] == 0.0
    assert data["text"] == " ".join(w["text"] for w in data["words"])
    # the text was streamed to the terminal as it came: every word, in order
    flat, pos = "".join(stdout.replace("[end of turn]", "").split()), 0
    for w in data["words"]:
        pos = flat.index(w["text"], pos) + len(w["text"])


def test_stream_in_odd_blocks_equals_the_file(tr, wavs):
    from moshi_mlx.audio.wav import read_wav

    ref = tr.transcribe_file(wavs[0])
    x = read_wav(wavs[0], 24000)  # the samples the file holds (16-bit), exactly
    cuts = [0, 1, 777, 5000, 5001, 40000, len(x)]
    got = Transcript("stream")
    got.add(tr.stream(x[a:b] for a, b in zip(cuts, cuts[1:], strict=False)))
    # same samples cut differently: same tokens (the codec and the LM stream exactly)
    assert words(got) == words(ref) and len(ref.words) >= 3
    assert [v.time for v in got.vad] == [v.time for v in ref.vad]


def test_batch_equals_each_file_alone(tr, wavs):
    single = [tr.transcribe_file(p) for p in wavs[:2]]
    frames = []
    batch = tr.transcribe_files(list(wavs[:2]), batch_size=2, on_progress=frames.append)
    for s, b in zip(single, batch, strict=True):
        assert words(b) == words(s)
        assert [v.time for v in b.vad] == [v.time for v in s.vad]
        assert b.duration == s.duration
    # progress counts the audio frames of both files, nothing of the padding
    assert sum(frames) == int(np.ceil(2.0 / 0.08)) + int(np.ceil(1.2 / 0.08))


def test_cli_batch_writes_one_file_per_input(capsys, tmp_path, tiny_stt_repo, wavs):
    rc, out, err = run_cli(capsys, "transcribe", "--model-dir", tiny_stt_repo, "-i", wavs[0],
                           "-i", wavs[1], "--output-dir", tmp_path, "--format", "srt",
                           "--batch-size", "2")
    assert rc == 0, err
    assert (tmp_path / "a.srt").read_text().startswith("1\n00:00:")
    assert (tmp_path / "b.srt").is_file() and f"{wavs[0]}:" in out


def test_txt_and_srt_renderings():
    t = Transcript("x", words=[Word("Hello", 0.5, 0.9), Word("there.", 0.9, 1.3),
                               Word("Next", 3.0, 3.1)], vad=[VadEvent(1.6, 0.9)])
    assert to_text(t) == "Hello there.\nNext\n"
    assert to_srt(t) == ("1\n00:00:00,500 --> 00:00:01,300\nHello there.\n\n"
                         "2\n00:00:03,000 --> 00:00:03,200\nNext\n")


@pytest.mark.parametrize("args, needle", [
    (["--output", "o.mp3"], "unknown format"),
    (["-i", "{b}", "--output", "o.json"], "use --output-dir"),
    (["--output-dir", "nowhere"], "no such directory"),
    (["--batch-size", "0"], "--batch-size"),
    (["--temp", "-1"], "--temp"),
    (["--input-device", "0"], "live microphone"),
])
def test_cli_mistakes_are_one_line(capsys, tmp_path, tiny_stt_repo, wavs, args, needle):
    args = [a.replace("{b}", str(wavs[1])) for a in args]
    args = [str(tmp_path / a) if a.startswith(("o.", "nowhere")) else a for a in args]
    rc, _, err = run_cli(capsys, "transcribe", "--model-dir", tiny_stt_repo, "-i", wavs[0], *args)
    assert needle in one_line_error(rc, err)


def test_cli_bad_inputs_and_a_moshi_model(capsys, tmp_path, tiny_stt_repo, tiny_repo):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav at all")
    for path, needle in ((tmp_path / "missing.wav", "no such file"), (bad, "not a WAV file")):
        rc, _, err = run_cli(capsys, "transcribe", "--model-dir", tiny_stt_repo, "-i", path)
        assert needle in one_line_error(rc, err)
    good = write_wav(tmp_path / "g.wav", speechlike(0.5, 24000), 24000)
    rc, _, err = run_cli(capsys, "transcribe", "--model-dir", tiny_repo, "-i", good)
    assert "not a speech-to-text checkpoint" in one_line_error(rc, err)
    rc, _, err = run_cli(capsys, "transcribe", "--model", "stt-3b", "-i", good)
    assert "stt-1b" in one_line_error(rc, err)


def test_tiny_repo_kind_stt_q4_and_quantize_at_load(tmp_path, tiny_stt_repo, tr, wavs):
    from moshi_mlx.quant import quantized_modules
    from moshi_mlx.testing.tiny_repo import main

    assert main([str(tmp_path / "q4"), "--kind", "stt", "--quant", "q4"]) == 0
    q4 = Transcriber.load(model_dir=tmp_path / "q4")
    assert (tmp_path / "q4" / "model.q4.safetensors").is_file()
    assert q4.info["precision"] == "q4" and q4.has_vad
    assert quantized_modules(q4.lm)["extra_heads.2"] == (4, 32)  # (bits, group_size)
    q8 = Transcriber.load(model_dir=tiny_stt_repo, quant="q8")
    assert q8.info["precision"] == "q8"
    assert quantized_modules(q8.lm)["transformer.layers.0.self_attn.in_proj"].bits == 8
    with pytest.raises(ValueError, match="already quantized"):
        Transcriber.load(model_dir=tmp_path / "q4", quant="q8")
    # q8 of the same weights hears the same audio the same way, mostly
    ref, got = tr.transcribe_file(wavs[0]), q8.transcribe_file(wavs[0])
    assert len(got.words) >= 2
    same = sum(a.text == b.text for a, b in zip(ref.words, got.words, strict=False))
    assert same >= len(ref.words) // 2


def test_offline_uncached_stt_model_says_what_to_download(capsys, tmp_path, monkeypatch, wavs):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, _, err = run_cli(capsys, "transcribe", "--model", "stt-2.6b", "-i", wavs[0])
    line = one_line_error(rc, err)
    assert line.endswith("hf download kyutai/stt-2.6b-en-mlx") and "offline" in line
    assert "tokenizer_spm_32k_3" not in line
