"""Streaming text-to-speech with Kyutai's delayed-streams TTS checkpoints (`kyutai/tts-*`).

`state_machine` and `script` are pure Python (no MLX): they turn a script into word entries and
decide, step by step, which text token the LM reads next.
"""
