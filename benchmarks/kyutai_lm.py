"""Time Kyutai's own `moshi_mlx` LmGen.step on a given config and weights file.

Runs ONLY under Kyutai's environment (moshi_mlx 0.3.0 with its pinned mlx, see
`docs/environments.md`); `benchmarks/bench_lm.py` calls it as a subprocess so both implementations are timed in one
run on the same weights. It is a benchmark helper, not a test, and imports nothing from our package.

    kyutai_lm.py CONFIG_JSON WEIGHTS --quant {bf16,q8,q4} --act {bf16,float32} [--frames N]
        [--lockstep]

With --lockstep it prints READY once loaded, then waits for one stdin line before each frame and
prints `FRAME ms` after it, so the driver can alternate frames with our implementation and both see
the same background load (the benchmark machine is shared).

CONFIG_JSON is Kyutai's `lm_kwargs` form (the `config.json` of their repos). WEIGHTS is a
safetensors file in Kyutai's MLX key layout (bf16, or quantized with q8 = 8 bits / group 64,
q4 = 4 bits / group 32, as their `quantize_mlx.py` makes them). Model build follows their
`run_inference.py`: `Lm(cfg)`, cast to bf16, `nn.quantize` for q8/q4, `load_weights(strict=True)`.
With `--act float32` every floating tensor (norms, bf16 weights, quantization scales/biases) is
then cast to float32, so activations run in float32.

Prints one JSON object on the last stdout line: p50/p95/mean ms per frame (warm-up excluded),
peak MLX memory, max RSS, mlx and moshi_mlx versions, and the text tokens produced.
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
DTYPES = {"bf16": mx.bfloat16, "float32": mx.float32}


def build_model(cfg_dict: dict, weights: str, quant: str, act: str) -> models.Lm:
    """Build Kyutai's Lm exactly as their loaders do, then set the activation dtype."""
    lm_cfg = models.LmConfig.from_config_dict(cfg_dict)
    model = models.Lm(lm_cfg)
    model.set_dtype(mx.bfloat16)
    if QUANT[quant] is not None:
        bits, group_size = QUANT[quant]
        nn.quantize(model, bits=bits, group_size=group_size)
    model.load_weights(weights, strict=True)
    if act != "bf16":
        model.set_dtype(DTYPES[act])
    mx.eval(model.parameters())
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("weights")
    ap.add_argument("--quant", choices=sorted(QUANT), default="bf16")
    ap.add_argument("--act", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--greedy", action="store_true", help="temperature 0 for text and audio")
    ap.add_argument("--prefill", type=int, default=0,
                    help="fill the temporal KV caches with this many random positions first")
    ap.add_argument("--lockstep", action="store_true",
                    help="print READY after loading, then wait for one stdin line before each frame")
    args = ap.parse_args(argv)

    with open(args.config) as f:
        cfg_dict = json.load(f)
    mx.random.seed(args.seed)
    t_load = time.perf_counter()
    model = build_model(cfg_dict, args.weights, args.quant, args.act)
    load_s = time.perf_counter() - t_load

    if args.greedy:
        text_sampler = utils.Sampler(temp=0.0)
        audio_sampler = utils.Sampler(temp=0.0)
    else:  # the same settings as our DEFAULT_TEXT / DEFAULT_AUDIO and their run_inference.py
        # Our moshi_mlx.sampling.DEFAULT_TEXT / DEFAULT_AUDIO: this env cannot import our package.
        text_sampler = utils.Sampler(temp=0.7, top_k=25)
        audio_sampler = utils.Sampler(temp=0.8, top_k=250)
    n_total = args.warmup + args.frames
    gen = models.LmGen(
        model=model,
        max_steps=n_total + 1,
        text_sampler=text_sampler,
        audio_sampler=audio_sampler,
        batch_size=1,
    )
    if args.prefill:  # deep-context timing: the next steps attend over `prefill` positions
        dt = DTYPES[args.act]
        xs = (mx.random.normal((1, args.prefill, cfg_dict["dim"])) * 0.1).astype(dt)
        mx.eval(model.transformer(xs, cache=model.transformer_cache))
    n_user = cfg_dict["n_q"] - cfg_dict["dep_q"]
    codes = user_codes(n_total, n_user, cfg_dict["card"], args.seed)

    def step(user: mx.array) -> tuple[mx.array, Any]:
        text, _ = gen.step(user)  # 0.3.0 returns (text tokens, transformer output)
        return text, gen.last_audio_tokens()

    result = {
        "impl": "kyutai",
        "quant": args.quant,
        "act": args.act,
        "load_s": load_s,
        **run_frames(step, codes, args.warmup, args.lockstep),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
