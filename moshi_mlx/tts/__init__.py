"""Streaming text-to-speech with Kyutai's delayed-streams TTS checkpoints (`kyutai/tts-*`).

- `state_machine`, `script`, `voices`: pure Python / NumPy (no MLX): script -> word entries, the
  per-step text decisions, voice files -> the speaker condition;
- `generate`: `TtsGen`, the LM stepped with the state machine as its text source;
- `speak`: load a TTS repository, stream text in and 24 kHz audio out (`cli.py speak`, via `cli`);
- `quant`: q8 / q4 quantization of a TTS LM in memory (`load_tts(quant=...)`, `quantize_tts_lm`).
See docs/tts.md for the facts these rely on.
"""
