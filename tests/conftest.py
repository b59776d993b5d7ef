"""Fixtures shared by the test modules (pytest finds them here; helpers are in `tests/helpers.py`).

- `tiny_repos(quant)`: a tiny random Moshi repo per precision ("bf16", "q8", "q4"), written once
  per session (seed 0, `moshi_mlx.testing.tiny_repo`); `tiny_repo` is the bf16 one.
- `tiny_repo_full_mimi`: the tiny LM with a real-size random Mimi (both Mimi backends load it).
- `tiny_tts_repo`: a tiny random TTS repo with one voice (`tiny_repo --kind tts`, seed 0).
- `lm_golden(name)`: the PyTorch teacher-forced LM goldens.
- `pulse_server`: a private PulseAudio server as the sound card (skips without pulseaudio).
- `echo_path`: that server with its speaker looped back into its microphone, for one test.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import audio_server
from tests.helpers import GOLDEN


@pytest.fixture(scope="session")
def tiny_repos(tmp_path_factory) -> Callable[[str], Path]:
    from moshi_mlx.testing.tiny_repo import write_tiny_repo

    made: dict[str, Path] = {}

    def get(quant: str = "bf16") -> Path:
        if quant not in made:
            made[quant] = write_tiny_repo(tmp_path_factory.mktemp(f"tiny_{quant}"), quant, seed=0)
        return made[quant]

    return get


@pytest.fixture(scope="session")
def tiny_repo(tiny_repos) -> Path:
    """The tiny bf16 repo."""
    return tiny_repos("bf16")


@pytest.fixture(scope="session")
def tiny_repo_full_mimi(tmp_path_factory) -> Path:
    from moshi_mlx.testing.tiny_repo import write_tiny_repo

    return write_tiny_repo(tmp_path_factory.mktemp("tiny_full_mimi"), "bf16", seed=0,
                           full_mimi=True)


@pytest.fixture(scope="session")
def tiny_stt_repo(tmp_path_factory) -> Path:
    """A tiny random speech-to-text repo with VAD heads (`moshi_mlx.testing.tiny_stt`)."""
    from moshi_mlx.testing.tiny_stt import write_tiny_stt_repo

    return write_tiny_stt_repo(tmp_path_factory.mktemp("tiny_stt"), "bf16", seed=0)


@pytest.fixture(scope="session")
def tiny_tts_repo(tmp_path_factory) -> Path:
    """A tiny random text-to-speech repo with one voice (`moshi_mlx.testing.tiny_tts`)."""
    from moshi_mlx.testing.tiny_tts import write_tiny_tts_repo

    return write_tiny_tts_repo(tmp_path_factory.mktemp("tiny_tts"), seed=0)


@pytest.fixture
def lm_golden() -> Callable[[str], tuple[dict[str, Any], Path, dict[str, Any]]]:
    """Loader of the PyTorch teacher-forced goldens: name -> (config dict, weights path, io dict)."""
    from safetensors.numpy import load_file

    def load(name: str) -> tuple[dict[str, Any], Path, dict[str, Any]]:
        with open(GOLDEN / f"lm_{name}_config.json") as f:
            cfg = json.load(f)
        return cfg, GOLDEN / f"lm_{name}_weights.safetensors", load_file(
            str(GOLDEN / f"lm_{name}_io.safetensors"))

    return load


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory):
    """A running private PulseAudio server; also points this process's PortAudio at it."""
    reason = audio_server.available()
    if reason:
        pytest.skip(reason)
    try:
        server = audio_server.start(tmp_path_factory.mktemp("pulse"))
    except RuntimeError:  # one retry: a loaded machine can be slow to bring the daemon up
        server = audio_server.start(tmp_path_factory.mktemp("pulse"))
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "PULSE_RUNTIME_PATH")}
    os.environ["PULSE_SERVER"] = server.env["PULSE_SERVER"]
    os.environ["PULSE_RUNTIME_PATH"] = server.env["PULSE_RUNTIME_PATH"]
    if "sounddevice" in sys.modules:  # PortAudio enumerates devices at init: re-init to see pulse
        sd = sys.modules["sounddevice"]
        sd._terminate()
        sd._initialize()
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def echo_path(pulse_server):
    """The speaker looped back into the microphone (60 ms, full volume) for one test."""
    idx = pulse_server.add_echo_path(latency_msec=60)
    yield pulse_server
    pulse_server.remove_echo_path(idx)
