"""`cli.py transcribe` from the microphone, through a real PulseAudio server, with the tiny STT model.

A wav is played into the virtual microphone while `transcribe` runs as a subprocess on the
server's default source with `--record`: the live transcript must hold exactly the words that
transcribing the recording as a file gives (same audio in, same words and end-of-turn events
out), and Ctrl+C must end a session cleanly with its output written.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np

from moshi_mlx.stt import Transcriber
from tests.helpers import (
    cli_process,
    interrupt,
    one_line_error,
    read_wav,
    run_cli,
    speechlike,
    talk_to,
    write_wav,
)


def transcribe(server, *args: str) -> subprocess.Popen:
    return cli_process(server, "transcribe", "--plain", *args)


def test_live_transcript_equals_the_file_transcript_of_what_was_heard(
        pulse_server, tiny_stt_repo, tmp_path):
    user = write_wav(tmp_path / "user.wav", speechlike(2.5, 24000, seed=3), 24000)
    out, rec = tmp_path / "live.json", tmp_path / "heard.wav"
    p = transcribe(pulse_server, "--model-dir", str(tiny_stt_repo), "--duration", "4",
                   "--output", str(out), "--record", str(rec))
    _, stdout, err = talk_to(p, pulse_server, user, timeout=90)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    live = json.loads(out.read_text())
    heard, rate, ch = read_wav(rec)
    assert (rate, ch) == (24000, 1) and heard.shape[1] == round(live["duration_s"] / 0.08) * 1920
    assert 3.9 <= live["duration_s"] <= 4.1
    assert np.abs(heard).max() > 0.2  # the played wav reached the microphone
    ref = Transcriber.load(model_dir=tiny_stt_repo).transcribe_file(rec)
    assert live["words"] == [w.to_dict() for w in ref.words] and len(ref.words) >= 2
    assert live["vad"] == [v.to_dict() for v in ref.vad]
    assert "words" in stdout and "Traceback" not in stdout


def test_live_ctrl_c_finishes_and_saves(pulse_server, tiny_stt_repo, tmp_path):
    out = tmp_path / "live.txt"
    p = transcribe(pulse_server, "--model-dir", str(tiny_stt_repo), "--output", str(out))
    stdout, err = interrupt(p, timeout=120)  # generous: a loaded 2-core machine
    assert p.returncode == 0, err
    assert "Traceback" not in err and out.is_file()
    assert "s transcribed" in stdout


def test_live_unknown_device_is_one_line_before_loading(capsys, pulse_server):
    # no model anywhere: the device is checked first
    rc, _, err = run_cli(capsys, "transcribe", "--model-dir", "/nonexistent", "--input-device", "99")
    assert one_line_error(rc, err).startswith("error: cannot use input device 99")
