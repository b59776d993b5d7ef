"""Cost of the TTS voice prefill on this machine: one cross-attention key/value projection.

Not a test: prints seconds per temporal layer. Before its first audio, tts-1.6b projects the voice
condition (5 speaker slots x 125 steps = 625 positions of dim 2048, the unused slots as the learnt
padding) through each of its 16 layers' cross-attention keys and values (`in_proj` rows D..3D, a
[4096, 2048] matrix), once per utterance. That one large matmul is what dominates time to first
audio on a CPU (`benchmarks/results/tts.md`); its cost depends on how the weight is stored:

    python benchmarks/bench_tts_prefill.py [--rows 625] [--repeat 2]

float32 through BLAS (our CPU compute policy for float weights), bf16 x bf16 (Kyutai's), and
MLX's quantized matmul (q8 group 64, q4 group 32) with float32 inputs (our step-time path on a
CPU) or bf16 ones (Kyutai's; they keep the cross-attention in bf16, so this row is for
reference), and the weight dequantized then one float32 matmul (what `CrossAttention.kv` does
with a quantized in_proj, dequantization included).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial

import moshi_mlx  # noqa: F401  (before MLX: routes its float32 matmuls to OpenBLAS on Linux)


def seconds(fn: Callable[[], object], repeat: int, warm: bool = True) -> float:
    import mlx.core as mx

    if warm:
        mx.eval(fn())
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        mx.eval(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    import mlx.core as mx

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=625, help="voice positions (5 slots x 125)")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--no-bf16-input", action="store_true",
                   help="skip the quantized bf16-input rows (minutes per call)")
    a = p.parse_args()
    mx.random.seed(0)
    x = mx.random.normal((a.rows, a.dim))
    w = (mx.random.normal((2 * a.dim, a.dim)) * a.dim**-0.5).astype(mx.bfloat16)
    w32 = mx.contiguous(w.astype(mx.float32).T)  # the layout our CPU policy stores
    xb = x.astype(mx.bfloat16)
    mx.eval(x, w, w32, xb)
    out = {"float32 (BLAS)": seconds(lambda: x @ w32, a.repeat),
           "bf16 x bf16": seconds(lambda: xb @ w.T, a.repeat)}
    for name, bits, group in (("q8 g64", 8, 64), ("q4 g32", 4, 32)):
        q, s, b = mx.quantize(w, group_size=group, bits=bits)
        s32, b32 = s.astype(mx.float32), b.astype(mx.float32)
        mx.eval(q, s, b, s32, b32)
        f32_in = partial(mx.quantized_matmul, x, q, s32, b32, transpose=True, group_size=group,
                         bits=bits)
        bf16_in = partial(mx.quantized_matmul, xb, q, s, b, transpose=True, group_size=group,
                          bits=bits)
        out[f"{name}, float32 input"] = seconds(f32_in, a.repeat)
        deq = partial(lambda q, s, b, g, n: x @ mx.dequantize(q, s, b, group_size=g, bits=n).T,
                      q, s32, b32, group, bits)
        out[f"{name}, dequantized"] = seconds(deq, a.repeat)
        if not a.no_bf16_input:
            # Minutes per call: one cold call is enough to see the order of magnitude.
            out[f"{name}, bf16 input"] = seconds(bf16_in, 1, warm=False)
    for k, v in out.items():
        print(f"{k:24s} {v:8.2f} s per layer, x16 layers = {16 * v:7.1f} s")
    print(json.dumps({"rows": a.rows, "dim": a.dim, "mlx": mx.__version__,
                      "seconds_per_layer": out}))


if __name__ == "__main__":
    main()
