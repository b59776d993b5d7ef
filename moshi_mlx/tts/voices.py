"""Speaker voices of Kyutai's TTS (`kyutai/tts-voices`): files -> the `speaker_wavs` condition.

A voice file is a safetensors file with one tensor `speaker_wavs` [1, dim, T] (dim 512, T 125
for tts-1.6b-en_fr), named `<voice>.<sig>@<epoch>.safetensors` after the checkpoint's
`model_id` (e.g. `expresso/ex03-ex01_happy_001_channel1_334s.wav.1e68beda@240.safetensors`).
The model cross-attends to `max_speakers` (5) slots of T steps each: the given voices fill the
first slots in order, the others are masked (the conditioner puts its learnt padding there).
This reproduces `TTSModel.make_condition_attributes` of PyTorch moshi (NumPy only).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_SPEAKERS = 5
VOICE_KEY = "speaker_wavs"
# The voice of Kyutai's TTS examples (delayed-streams-modeling), used when a model from the hub
# has no voices of its own and none is named.
DEFAULT_VOICE = "expresso/ex03-ex01_happy_001_channel1_334s.wav"


def voice_suffix(model_id: dict | None) -> str:
    """`.<sig>@<epoch>.safetensors` for a checkpoint's `model_id` ("" without one)."""
    if not model_id:
        return ""
    return f".{model_id['sig']}@{model_id['epoch']}.safetensors"


def load_voice(path: str | Path) -> np.ndarray:
    """A voice file -> its embedding [T, dim] float32."""
    from safetensors.numpy import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"a voice must be a .safetensors file, got {path}")
    if not path.is_file():
        raise FileNotFoundError(f"voice file not found: {path}")
    tensors = load_file(str(path))
    if VOICE_KEY not in tensors or tensors[VOICE_KEY].ndim != 3 or tensors[VOICE_KEY].shape[0] != 1:
        raise ValueError(f"{path}: expected a tensor {VOICE_KEY!r} of shape [1, dim, T]")
    return np.ascontiguousarray(tensors[VOICE_KEY][0].T.astype(np.float32))


def speaker_condition(
    voices: Sequence[np.ndarray], max_speakers: int = MAX_SPEAKERS
) -> tuple[np.ndarray, np.ndarray]:
    """Voices [T, dim] each -> (tensor [1, max_speakers * T, dim], mask [1, max_speakers * T])."""
    if not 1 <= len(voices) <= max_speakers:
        raise ValueError(f"give 1 to {max_speakers} voices, got {len(voices)}")
    T, dim = voices[0].shape
    if any(v.shape != (T, dim) for v in voices):
        raise ValueError(f"all voices must have the shape of the first, {(T, dim)}")
    tensor = np.zeros((max_speakers, T, dim), np.float32)
    mask = np.zeros((max_speakers, T), bool)
    for i, v in enumerate(voices):
        tensor[i] = v
        mask[i] = True
    return tensor.reshape(1, -1, dim), mask.reshape(1, -1)
