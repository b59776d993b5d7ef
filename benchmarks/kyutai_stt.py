"""Time Kyutai's own `moshi_mlx` STT step (`LmGen.step_with_extra_heads`) on a config and weights.

Runs ONLY under Kyutai's environment (moshi_mlx 0.3.0 with its pinned mlx; `KYUTAI_PYTHON`);
`benchmarks/bench_stt.py` calls it as a subprocess. A benchmark helper, not a test: it imports
nothing from our package.

    kyutai_stt.py CONFIG_JSON WEIGHTS --quant {bf16,q8,q4} [--frames N] [--warmup N]

The model is built as their STT scripts do (`stt_from_file_mlx.py`, `run_inference.py`):
`LmConfig.from_config_dict`, `Lm`, bf16, `nn.quantize` for q8/q4, `load_weights(strict=True)`,
greedy text sampling; each frame feeds 32 user codebooks and materializes the text token and the
VAD heads. Prints one JSON object on the last stdout line (see `lm_timing.run_frames`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from lm_timing import run_frames, user_codes

from moshi_mlx import models, utils

QUANT = {"bf16": None, "q8": (8, 64), "q4": (4, 32)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("weights")
    ap.add_argument("--quant", choices=sorted(QUANT), default="bf16")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args(argv)
    with open(a.config) as f:
        cfg = json.load(f)
    t0 = time.perf_counter()
    model = models.Lm(models.LmConfig.from_config_dict(cfg))
    model.set_dtype(mx.bfloat16)
    if QUANT[a.quant] is not None:
        bits, group = QUANT[a.quant]
        nn.quantize(model, bits=bits, group_size=group)
    model.load_weights(a.weights, strict=True)
    mx.eval(model.parameters())
    load_s = time.perf_counter() - t0
    n = a.frames + a.warmup
    gen = models.LmGen(model=model, max_steps=n + 1, text_sampler=utils.Sampler(temp=0.0),
                       audio_sampler=utils.Sampler(temp=0.0), batch_size=1)

    def step(user: mx.array) -> tuple[mx.array, Any]:
        text, heads = gen.step_with_extra_heads(user)
        return text, (mx.stack(heads) if heads else None)

    res = run_frames(step, user_codes(n, cfg["n_q"], cfg["card"], 1), a.warmup, False)
    sys.stdout.write(json.dumps({"impl": "kyutai", "quant": a.quant, "load_s": load_s, **res})
                     + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
