"""Frame timing shared by our LM worker (`bench_lm.py`) and Kyutai's (`kyutai_lm.py`).

Imports only numpy and mlx, so it runs in both environments (Kyutai's venv has its own mlx and no
moshi_mlx of ours). Both workers time one generation step per frame the same way and speak the same
`--lockstep` protocol: print READY, then per frame wait for a stdin line and print `FRAME <ms>`.
"""

from __future__ import annotations

import importlib.metadata
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np

# step(user codes [1, n_user]) -> (text tokens, audio codes or None while the delay holds them back)
StepFn = Callable[[mx.array], tuple[mx.array, Any]]


def user_codes(n: int, n_user: int, card: int, seed: int) -> np.ndarray:
    """Fixed pseudo-random user codes [n, n_user], identical in both workers."""
    return np.random.default_rng(seed).integers(0, card, size=(n, n_user), dtype=np.int64)


def run_frames(step: StepFn, codes: np.ndarray, warmup: int, lockstep: bool) -> dict[str, Any]:
    """Time `step` on each row of `codes` (tokens materialized); warm-up frames are not timed."""
    times: list[float] = []
    cpu: list[float] = []
    texts: list[int] = []
    audio_frames = 0
    mx.reset_peak_memory()
    if lockstep:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
    for i in range(len(codes)):
        if lockstep:
            sys.stdin.readline()
        user = mx.array(codes[i][None, :], dtype=mx.int32)
        t0, c0 = time.perf_counter(), time.process_time()
        text, audio = step(user)
        if audio is not None:
            mx.eval(text, audio)
            audio_frames += int(i >= warmup)
        else:
            mx.eval(text)
        tok = int(np.asarray(text).reshape(-1)[0])
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        texts.append(tok)
        if i >= warmup:
            times.append(dt * 1000.0)
            cpu.append(dc * 1000.0)
        if lockstep:
            sys.stdout.write(f"FRAME {dt * 1000.0:.3f}\n")
            sys.stdout.flush()
    ms, cms = np.asarray(times), np.asarray(cpu)
    return {
        "frames": len(times),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "cpu_p50_ms": float(np.percentile(cms, 50)),
        "cpu_p95_ms": float(np.percentile(cms, 95)),
        "peak_mem_mb": mx.get_peak_memory() / 2**20,
        "rss_max_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "audio_frames": audio_frames,
        "text_tokens": texts,
        "mlx": importlib.metadata.version("mlx"),
        "moshi_mlx": importlib.metadata.version("moshi_mlx"),
    }
