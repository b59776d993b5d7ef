"""Frame period of the two schedules (serial, pipelined) with a real-size Mimi and a stand-in LM.

    python benchmarks/bench_schedule.py --lm-ms 60 [--lm-ms 20 40 ...] [--backend mlx rustymimi]
        [--frames 40] [--warmup 5] [--json F]

The Mimi is a random one of the released shape (real config, 8 codebooks used), on the MLX backend
and/or rustymimi. The LM step is a stand-in that holds a *simulated accelerator* for `--lm-ms`
milliseconds without using the CPU, the way a Metal step leaves the CPU free: `step()` returns at
once, and reading its outputs waits until the step's deadline. Frames go through the real
`moshi_mlx.conversation.Conversation`, the same scheduling code as `chat`, `run` and `bench`, back
to back; the period is the wall time of one `Conversation.step` call (median over `--frames`).

Expected: serial ~ encode + LM + decode; pipelined ~ encode + max(LM, decode), since the decode of
the previous step's audio runs while the accelerator is busy. JSON: `encode_ms`, `decode_ms`,
`serial_period_ms`, `pipelined_period_ms` (per frame, medians) for the first backend and `--lm-ms`
value, and `rows` with every combination. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moshi_mlx.compute import prefer_system_blas  # noqa: E402

prefer_system_blas()  # before MLX is imported: the same BLAS as cli.py on Linux

import mlx.core as mx  # noqa: E402

from moshi_mlx.codec import load_mimi  # noqa: E402
from moshi_mlx.config import mimi_202407  # noqa: E402
from moshi_mlx.conversation import BUDGET_MS, FRAME_SIZE, Conversation, FrameTiming  # noqa: E402
from moshi_mlx.models.mimi.synthetic import speech_like_signal, write_random_checkpoint  # noqa: E402

CARD = 2048


class _Deadline:
    """An output whose value is ready at `ready_at` (perf_counter): converting it waits."""

    def __init__(self, value: np.ndarray, ready_at: float) -> None:
        self.value, self.ready_at = value, ready_at

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        left = self.ready_at - time.perf_counter()
        if left > 0:
            time.sleep(left)  # the CPU is free meanwhile, as with a GPU step
        return self.value if dtype is None else self.value.astype(dtype)


@dataclass
class _Out:
    text: _Deadline
    audio: _Deadline | None


class SimulatedLm:
    """Stand-in for `LmGen`: one step occupies a simulated accelerator for `lm_ms`; steps queue."""

    def __init__(self, lm_ms: float, seed: int = 0) -> None:
        self.lm_s = lm_ms / 1e3
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.busy_until = 0.0

    def step(self, user_codes) -> _Out:
        start = max(time.perf_counter(), self.busy_until)
        self.busy_until = start + self.lm_s
        text = np.array([3], np.int32)  # padding: no text events
        audio = None
        if self.steps >= 1:  # Moshi's acoustic delay: no audio at step 0
            audio = self.rng.integers(0, CARD, (1, 8)).astype(np.int32)
        self.steps += 1
        return _Out(_Deadline(text, self.busy_until),
                    None if audio is None else _Deadline(audio, self.busy_until))


class _NoText:
    def piece(self, token: int) -> str:
        return ""


def measure(codec, lm_ms: float, schedule: str, frames: int, warmup: int) -> dict:
    conv = Conversation(SimulatedLm(lm_ms), codec, _NoText(), schedule=schedule)
    pcm = speech_like_signal((frames + warmup) * FRAME_SIZE, 24000)[0, 0]
    timings: list[FrameTiming] = []
    for i in range(frames + warmup):
        ev = conv.step(pcm[i * FRAME_SIZE:(i + 1) * FRAME_SIZE])
        if i >= warmup:
            timings += [e for e in ev if isinstance(e, FrameTiming)]
    conv.flush()

    def med(key: str) -> float:
        return round(float(np.median([getattr(t, key) for t in timings])), 2)

    return {"encode_ms": med("encode_ms"), "decode_ms": med("decode_ms"),
            "period_ms": med("total_ms")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lm-ms", type=float, nargs="+", required=True,
                   help="simulated accelerator time per LM step (one or more values)")
    p.add_argument("--backend", nargs="+", default=["mlx"], choices=["mlx", "rustymimi"])
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "tokenizer-e351c8d8-checkpoint125.safetensors"
        print("writing a random real-size Mimi ...", file=sys.stderr)
        write_random_checkpoint(ckpt, mimi_202407(32))
        for backend in a.backend:
            codec = load_mimi(ckpt, num_codebooks=8, backend=backend)
            for lm_ms in a.lm_ms:
                s = measure(codec, lm_ms, "serial", a.frames, a.warmup)
                q = measure(codec, lm_ms, "pipelined", a.frames, a.warmup)
                enc = float(np.mean([s["encode_ms"], q["encode_ms"]]))
                dec = float(np.mean([s["decode_ms"], q["decode_ms"]]))
                rows.append({
                    "backend": backend, "lm_ms": lm_ms,
                    "encode_ms": round(enc, 2), "decode_ms": round(dec, 2),
                    "serial_period_ms": s["period_ms"], "pipelined_period_ms": q["period_ms"],
                    "serial_expected_ms": round(enc + lm_ms + dec, 2),
                    "pipelined_expected_ms": round(enc + max(lm_ms, dec), 2),
                })
    print(f"{'backend':10} {'LM ms':>6} {'enc':>6} {'dec':>6} {'serial':>7} {'(E+L+D)':>8} "
          f"{'pipelined':>9} {'(E+max)':>8}  keeps {BUDGET_MS:.0f} ms")
    for r in rows:
        keeps = [n for n, k in (("serial", "serial_period_ms"), ("pipelined", "pipelined_period_ms"))
                 if r[k] <= BUDGET_MS]
        print(f"{r['backend']:10} {r['lm_ms']:6.0f} {r['encode_ms']:6.1f} {r['decode_ms']:6.1f} "
              f"{r['serial_period_ms']:7.1f} {r['serial_expected_ms']:8.1f} "
              f"{r['pipelined_period_ms']:9.1f} {r['pipelined_expected_ms']:8.1f}  "
              f"{', '.join(keeps) or 'neither'}")
    if a.json:
        first = rows[0]
        out = {k: first[k] for k in ("encode_ms", "decode_ms", "serial_period_ms",
                                     "pipelined_period_ms", "lm_ms", "backend")}
        out |= {"rows": rows, "frames": a.frames,
                "device": f"{platform.machine()} {platform.system()}, mlx {mx.__version__}"}
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
