"""Speed of `cli.py speak`'s pipeline on a TTS model directory: time to first audio, real-time
factor, per-step time (LM + state machine + Mimi decode), peak memory. Prints numbers, asserts
nothing.

    python benchmarks/bench_tts.py --model-dir DIR [--text "..."] [--repeat 2]

Use a model from `python -m moshi_mlx.testing.tiny_repo DIR --kind tts` for the pipeline's
overhead, or the real `kyutai/tts-1.6b-en_fr` directory on a Mac. At the real shape against
Kyutai's `moshi_mlx` (random weights, bf16 / q8 / q4): `benchmarks/bench_tts_real.py`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import mlx.core as mx
import numpy as np

from moshi_mlx.tts.speak import find_voice, load_tts, speak

TEXT = ("Hello, this is a test of streaming speech synthesis. The text leads and the audio "
        "follows, one word at a time, until the end of the sentence.")


def run(model, voice, text: str, seed: int) -> dict:
    t0 = time.perf_counter()
    first: list[float] = []

    def on_audio(pcm: np.ndarray) -> None:
        if not first:
            first.append(time.perf_counter() - t0)

    mx.reset_peak_memory()
    res = speak(model, text, voice, seed=seed, on_audio=on_audio)
    wall = time.perf_counter() - t0
    audio_s = len(res.pcm) / model.codec.sample_rate
    return {"steps": res.steps, "audio_s": round(audio_s, 2), "wall_s": round(wall, 2),
            "rtf": round(wall / max(audio_s, 1e-9), 3),
            "step_ms_mean": round(1000 * wall / res.steps, 1),
            "first_audio_s": round(first[0], 2) if first else None,
            "peak_mem_mb": round(mx.get_peak_memory() / 1e6, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--text", default=TEXT)
    p.add_argument("--repeat", type=int, default=2, help="runs (the first includes compilation)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    model = load_tts(a.model_dir)
    voice = find_voice(model, None)
    for i in range(a.repeat):
        out = run(model, voice, a.text, a.seed)
        out.update(run=i, device=str(mx.default_device()), mlx=mx.__version__,
                   machine=platform.machine(), delay_steps=model.delay_steps)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
