"""audio/chat.py: a session that fails midway still saves what was recorded."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from moshi_mlx import hub
from moshi_mlx.audio import chat
from moshi_mlx.audio.live import LiveAudio
from moshi_mlx.audio.pipeline import Settings
from moshi_mlx.ui.terminal import PlainUI


def test_microphone_lost_midway_still_saves_the_records(tiny_repo, tmp_path, monkeypatch):
    """The input device stops delivering after 5 frames: the session ends with the device error,
    and the transcript and recording of those 5 frames are written (they used to be lost)."""
    frames = iter([np.full(1920, 0.1, np.float32)] * 5)
    monkeypatch.setattr(chat, "check_devices", lambda *a: (24000, 24000))
    monkeypatch.setattr(chat, "NO_INPUT_TIMEOUT_S", 0.2)
    monkeypatch.setattr(LiveAudio, "start", lambda self: None)
    monkeypatch.setattr(LiveAudio, "read_frame", lambda self, timeout=0.5: next(frames, None))
    opts = chat.ChatOptions(transcript=tmp_path / "t.json", record=tmp_path / "r.wav",
                            warmup_frames=1)
    with pytest.raises(RuntimeError, match="no audio"):
        chat.run_chat(hub.resolve(model_dir=tiny_repo), Settings(), opts, PlainUI(io.StringIO()))
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["stats"]["frames"] == 5
    from moshi_mlx.audio.wav import read_wav

    user = read_wav(tmp_path / "r.wav")  # mono downmix of (user, Moshi)
    assert user.shape == (5 * 1920,)
