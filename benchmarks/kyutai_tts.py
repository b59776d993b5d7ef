"""Time Kyutai's own `moshi_mlx` TTS (`TTSModel.generate` + their MLX Mimi) on a TTS repository.

Runs ONLY under Kyutai's environment (moshi_mlx 0.3.0 with its pinned mlx; `KYUTAI_PYTHON`);
`benchmarks/bench_tts_real.py` calls it as a subprocess. A benchmark helper, not a test: it
imports nothing from our package.

    kyutai_tts.py REPO --quant {bf16,q8,q4} [--steps N] [--seed S] [--text TEXT]

Built as their `run_tts.py` does with local files: `LmConfig.from_config_dict`, `Lm`,
`set_dtype(bfloat16)`, `load_pytorch_weights(strict=True)` (their PyTorch-name conversion), then
for q8/q4 their in-memory quantization: `nn.quantize` (default group size 64) over the whole
depformer and over each temporal layer's `self_attn` and `gating` (not the cross-attention, the
embeddings or the text head); `TTSModel(temp 0.6, cfg_coef 2.0 as a `cfg` condition, max_padding
8, initial_padding 2, final_padding 4)`, `prepare_script(padding_between=1)`.

Audio is decoded as it is generated: their `on_frame` hook calls their Mimi `decode_step` on each
frame (as their streaming examples do; `run_tts.py` decodes after generation). Time to first
audio runs from before the script and voice are prepared to the end of the first frame's decode.
Per-step time is taken around `LmGen.step` (a timing subclass put in place of
`moshi_mlx.models.tts.LmGen`), Mimi time around `decode_step`. Generation stops after `--steps`
steps (`max_gen_length`). Prints one JSON object on the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import moshi_mlx.models.tts as kyutai_tts
import numpy as np
import sentencepiece

import moshi_mlx
from moshi_mlx import models

BITS = {"bf16": None, "q8": 8, "q4": 4}


def peak_memory() -> int:
    fn = getattr(mx, "get_peak_memory", None) or mx.metal.get_peak_memory
    return int(fn())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", type=Path)
    ap.add_argument("--quant", choices=sorted(BITS), default="bf16")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", default="Hello world.")
    a = ap.parse_args(argv)
    mx.random.seed(a.seed)
    raw = json.loads((a.repo / "config.json").read_text())
    t0 = time.perf_counter()
    lm_config = models.LmConfig.from_config_dict(raw)
    model = models.Lm(lm_config)
    model.set_dtype(mx.bfloat16)
    model.load_pytorch_weights(str(a.repo / raw["moshi_name"]), lm_config, strict=True)
    if BITS[a.quant] is not None:  # run_tts.py's choice of modules, group size left at 64
        nn.quantize(model.depformer, bits=BITS[a.quant])
        for layer in model.transformer.layers:
            nn.quantize(layer.self_attn, bits=BITS[a.quant])
            nn.quantize(layer.gating, bits=BITS[a.quant])
    mx.eval(model.parameters())
    mimi = models.mimi.Mimi(models.mimi_202407(lm_config.generated_codebooks))
    mimi.load_pytorch_weights(str(a.repo / raw["mimi_name"]), strict=True)
    tokenizer = sentencepiece.SentencePieceProcessor(str(a.repo / raw["tokenizer_name"]))
    tts = kyutai_tts.TTSModel(model, mimi, tokenizer, temp=0.6, cfg_coef=2.0,
                              max_gen_length=a.steps, raw_config=raw)
    cfg_condition = tts.cfg_coef
    tts.cfg_coef = 1.0  # distilled CFG: the strength goes in as the `cfg` condition
    load_s = time.perf_counter() - t0
    voice = next((a.repo / "voices").glob(f"*{tts.voice_suffix}"))

    step_s: list[float] = []
    mimi_s: list[float] = []
    first: list[float] = []  # seconds to the first decoded frame, steps run by then
    pcm: list[np.ndarray] = []

    class TimedLmGen(kyutai_tts.LmGen):  # what TTSModel.generate builds, with a stopwatch
        def step(self, *args, **kwargs):
            s = time.perf_counter()
            out = super().step(*args, **kwargs)
            mx.eval(out)
            step_s.append(time.perf_counter() - s)
            print(f"step {len(step_s)}: {step_s[-1]:.2f} s", file=sys.stderr, flush=True)
            return out

    kyutai_tts.LmGen = TimedLmGen

    def on_frame(frame: mx.array) -> None:
        s = time.perf_counter()
        out = tts.mimi.decode_step(mx.array(frame)[:, :, None])
        pcm.append(np.array(out))
        mimi_s.append(time.perf_counter() - s)
        if not first:
            first.extend([time.perf_counter() - start, len(step_s)])

    start = time.perf_counter()
    entries = tts.prepare_script([a.text], padding_between=1)
    attrs = tts.make_condition_attributes([voice], cfg_condition)
    result = tts.generate([entries], [attrs], cfg_is_no_prefix=False, cfg_is_no_text=False,
                          on_frame=on_frame)
    wall = time.perf_counter() - start
    samples = sum(p.shape[-1] for p in pcm)
    out = {
        "impl": "kyutai", "quant": a.quant, "activations": "bfloat16", "load_s": load_s,
        "steps": len(step_s), "wall_s": wall, "first_audio_s": first[0] if first else None,
        "first_audio_step": first[1] if first else None,
        "step_ms": [1000 * s for s in step_s], "mimi_ms": [1000 * s for s in mimi_s],
        "audio_s": samples / 24000, "words": len(result.all_transcripts[0]),
        "pcm_rms": float(np.sqrt(np.mean(np.square(np.concatenate(pcm, -1))))) if pcm else None,
        "peak_mem_mb": peak_memory() / 1e6,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mlx": mx.__version__, "moshi_mlx": getattr(moshi_mlx, "__version__", "?"),
        "device": str(mx.default_device()),
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
