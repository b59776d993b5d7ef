"""`cli.py speak`: argument checks and wiring for text to speech (see `moshi_mlx.tts.speak`).

Writes the words to standard output as the model starts them, the wav at the end, then one
summary line. User mistakes raise ValueError / OSError, which `cli.py` prints as one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable

from ..sampling import Sampler


def _text(a: argparse.Namespace) -> str | Iterable[str]:
    if (a.text is None) == (a.text_file is None):
        raise ValueError("give the text as an argument, '-' for standard input, or --text-file")
    if a.text_file is not None:
        if not a.text_file.is_file():
            raise FileNotFoundError(f"--text-file {a.text_file}: no such file")
        text = a.text_file.read_text()
    elif a.text == "-":
        return iter(sys.stdin.readline, "")
    else:
        text = a.text
    if not text.strip():
        raise ValueError("the text is empty")
    return text


def run_speak(a: argparse.Namespace) -> int:
    from ..audio.wav import write_wav
    from .speak import FRAME_RATE, find_voice, load_tts, speak

    if a.temp < 0:
        raise ValueError("--temp must be >= 0")
    if a.max_seconds <= 0:
        raise ValueError("--max-seconds must be > 0")
    if not 0 <= a.seed < 2**64:
        raise ValueError("--seed must be in [0, 2**64)")
    if a.output.is_dir() or not a.output.resolve().parent.is_dir():
        raise ValueError(f"--output {a.output}: not a writable file path")
    if not a.model_dir.is_dir():
        raise FileNotFoundError(f"--model-dir {a.model_dir}: no such directory")
    text = _text(a)
    model = load_tts(a.model_dir, dtype=None if a.dtype == "auto" else a.dtype)
    voice = find_voice(model, a.voice)
    if not voice.is_file():
        raise FileNotFoundError(f"voice file not found: {voice}")
    text_sampler = Sampler(a.temp, top_k=25) if a.temp > 0 else Sampler(0.0)
    audio_sampler = Sampler(a.temp, top_k=250) if a.temp > 0 else Sampler(0.0)
    t0 = time.perf_counter()
    result = speak(model, text, voice, cfg_coef=a.cfg, text_sampler=text_sampler,
                   audio_sampler=audio_sampler, seed=a.seed,
                   max_steps=int(a.max_seconds * FRAME_RATE) + model.delay_steps + 8,
                   on_word=lambda word, step: print(word, end=" ", flush=True))
    print()
    write_wav(a.output, result.pcm, model.codec.sample_rate)
    seconds = len(result.pcm) / model.codec.sample_rate
    note = "" if result.end_step is not None else " (cut by --max-seconds)"
    print(f"wrote {a.output}: {seconds:.2f} s of audio in {time.perf_counter() - t0:.1f} s{note}")
    return 0
