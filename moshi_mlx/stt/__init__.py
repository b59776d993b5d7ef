"""Streaming speech-to-text with Kyutai's STT checkpoints (delayed streams modeling).

Kyutai's `stt-1b-en_fr` and `stt-2.6b-en` are Moshi's LM without the depth transformer: 32 user
audio codebooks in, one text stream out, trailing the audio by a fixed delay (0.5 s / 2.5 s).

- `Transcriber` (`transcriber.py`): load by name / repo / directory; `stream(blocks)` yields
  events as they come, `transcribe_file(s)` returns `Transcript`s (timed words, end-of-turn events).
- `SttSession` (`session.py`): frames in, events out, for a batch of streams (padding as Kyutai's tools).
- `SttGen` (`gen.py`): the model step, PT `LMGen` for a text-only LM, with the VAD heads.
- `WordTimer`, `VadTracker` (`words.py`): token ids -> timed words / end-of-turn events.
- `iter_wav` (`audio_in.py`): long WAV files block by block at 24 kHz; `outputs.py`: TXT/JSON/SRT.

Names are imported lazily so that `import moshi_mlx.stt` stays cheap (no MLX graph, no hub access).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Transcriber": "transcriber", "Transcript": "transcriber", "STT_MODELS": "transcriber",
    "SttSession": "session", "SttConfig": "session", "Piece": "session",
    "SttGen": "gen", "SttStep": "gen",
    "Word": "words", "VadEvent": "words", "WordTimer": "words", "VadTracker": "words",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'moshi_mlx.stt' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
