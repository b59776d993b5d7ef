"""Mimi streaming speed: encode + decode of one 80 ms frame, ours vs rustymimi vs Kyutai's MLX Mimi.

    python benchmarks/bench_mimi.py [--frames 40] [--warmup 5] [--codebooks 8] [--kyutai-python PATH]

All run in the same invocation on the same random full-size checkpoint (real Mimi shape, released
PyTorch layout, written to a temporary file). Per frame: `encode_step` of 1920 samples, then
`decode_step` of the codes just produced (batch 1, float32). Ours and rustymimi run in interleaved
blocks of frames (both sample the same background load; see `_blocks`). Kyutai's `moshi_mlx` runs in its
own environment (`--kyutai-python` or `$KYUTAI_PYTHON`, see `docs/environments.md`; it pins an older
MLX) through a subprocess, skipped without one.
The last lines give each backend's streaming codes' agreement with ours.
Prints p50 / p95 milliseconds per frame and the real-time factor (p50 / 80 ms; < 1 keeps up).
Asserts nothing. Machine noise is large on shared CPUs: compare rows of one run only.

Linux note: the `mlx[cpu]` wheel links the netlib *reference* BLAS, and every float32 matmul (all of
Mimi's convolutions and linears, see nn/conv.py) goes through it at 1-3 GFLOP/s single-threaded.
When Debian's OpenBLAS is installed (`apt-get install libopenblas0-pthread`), a child process repeats
the ours/rustymimi blocks after `moshi_mlx.compute.prefer_system_blas()` (called before MLX is
imported; same effect as `LD_PRELOAD=.../openblas-pthread/libblas.so.3`), so MLX calls OpenBLAS
instead (rustymimi has its own GEMM; its row there is the control). On macOS MLX uses
Accelerate (and Metal), so none of this applies there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRAME = 1920
FRAME_MS = 80.0
LABELS = {"ours": "ours (moshi_mlx)", "rustymimi": "rustymimi (Rust)"}

KYUTAI_SCRIPT = r"""
import json, sys, time
import numpy as np, mlx.core as mx
from moshi_mlx.models import mimi
path, frames, warmup, ncb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = mimi.Mimi(mimi.mimi_202407(ncb))
model.load_pytorch_weights(path, strict=True)
pcm = np.load(sys.argv[5])
enc, dec, all_codes = [], [], []
for i in range(warmup + frames):
    x = mx.array(pcm[..., (i % (pcm.shape[-1] // 1920)) * 1920:][..., :1920])
    t0 = time.perf_counter(); codes = model.encode_step(x); mx.eval(codes)
    t1 = time.perf_counter(); y = model.decode_step(codes); mx.eval(y)
    t2 = time.perf_counter()
    all_codes.append(np.array(codes).reshape(-1).tolist())
    if i >= warmup:
        enc.append(t1 - t0); dec.append(t2 - t1)
print(json.dumps({"enc": enc, "dec": dec, "codes": all_codes, "mlx": mx.__version__}))
"""


def _blocks(steppers: dict, pcm: np.ndarray, frames: int, warmup: int, block: int) -> dict:
    """Run the backends in turn, `block` frames each, until each has timed `frames` frames.

    Interleaving blocks lets all backends sample the same background load (shared machines are
    noisy) without running them frame by frame in lockstep, where their BLAS thread pools (which
    spin while idle) would slow each other down. The first frame of each block is not timed.
    """
    res = {name: {"enc": [], "dec": [], "codes": []} for name in steppers}
    n_avail = pcm.shape[-1] // FRAME
    pos = dict.fromkeys(steppers, 0)
    while any(len(r["enc"]) < frames for r in res.values()):
        for name, (encode_step, decode_step) in steppers.items():
            for j in range(block + 1):
                if len(res[name]["enc"]) >= frames:
                    break
                i = pos[name]
                pos[name] += 1
                x = pcm[..., (i % n_avail) * FRAME:][..., :FRAME]
                t0 = time.perf_counter()
                codes = encode_step(x)
                t1 = time.perf_counter()
                decode_step(codes)
                t2 = time.perf_counter()
                res[name]["codes"].append(np.asarray(codes).reshape(-1).tolist())
                if i >= warmup and j > 0:
                    res[name]["enc"].append(t1 - t0)
                    res[name]["dec"].append(t2 - t1)
    return res


def bench_in_process(path: Path, pcm: np.ndarray, args: argparse.Namespace) -> dict:
    """Ours and rustymimi, in interleaved blocks."""
    steppers = {}
    if "ours" in args.only:
        from moshi_mlx.codec import load_mimi

        codec = load_mimi(path, num_codebooks=args.codebooks)
        state = codec.init_state(1)
        steppers["ours"] = (lambda x: codec.encode_step(x, state),
                            lambda c: codec.decode_step(c, state))
    if "rustymimi" in args.only:
        import rustymimi

        tok = rustymimi.Tokenizer(str(path), num_codebooks=args.codebooks)
        steppers["rustymimi"] = (lambda x: tok.encode_step(np.ascontiguousarray(x)),
                                 tok.decode_step)
    return _blocks(steppers, pcm, args.frames, args.warmup, args.block)


def bench_openblas(path: Path, args: argparse.Namespace) -> dict | None:
    """The same, in a child process where MLX uses the system OpenBLAS (`prefer_system_blas`)."""
    from moshi_mlx.compute import OPENBLAS_CANDIDATES

    if not any(Path(c).exists() for c in OPENBLAS_CANDIDATES):
        print("(skipping ours + OpenBLAS: libopenblas0-pthread not installed)", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        cmd = [sys.executable, __file__, "--system-blas", "--only", "ours", "rustymimi",
               "--checkpoint", str(path),
               "--json", str(out), "--frames", str(args.frames), "--warmup", str(args.warmup),
               "--codebooks", str(args.codebooks), "--block", str(args.block)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not out.exists():
            print(f"(ours + OpenBLAS failed: {res.stderr.strip()[-500:]})", file=sys.stderr)
            return None
        return json.loads(out.read_text())


def bench_kyutai(path: Path, pcm_file: Path, args: argparse.Namespace) -> dict | None:
    py = args.kyutai_python
    if not py or not Path(py).exists():
        print(f"(skipping Kyutai's MLX Mimi: no interpreter at {py})", file=sys.stderr)
        return None
    cmd = [py, "-c", KYUTAI_SCRIPT, str(path), str(args.kyutai_frames), str(args.warmup),
           str(args.codebooks), str(pcm_file)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if res.returncode != 0:
        print(f"(Kyutai's MLX Mimi failed: {res.stderr.strip()[-500:]})", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def _row(name: str, r: dict) -> str:
    tot = np.array(r["enc"]) + np.array(r["dec"])
    p50, p95 = np.percentile(tot, 50) * 1e3, np.percentile(tot, 95) * 1e3
    e50, d50 = np.median(r["enc"]) * 1e3, np.median(r["dec"]) * 1e3
    return (f"| {name:<36} | {p50:8.1f} | {p95:8.1f} | {e50:8.1f} | {d50:8.1f} | "
            f"{p50 / FRAME_MS:5.2f} | {len(tot):3d} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--kyutai-frames", type=int, default=10, help="Kyutai's is slow: fewer frames")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--block", type=int, default=10, help="frames per backend turn")
    ap.add_argument("--codebooks", type=int, default=8)
    ap.add_argument("--kyutai-python", default=os.environ.get("KYUTAI_PYTHON"),
                    help="interpreter of Kyutai's moshi_mlx env (default: $KYUTAI_PYTHON)")
    ap.add_argument("--only", nargs="*", default=["ours", "openblas", "rustymimi", "kyutai"])
    ap.add_argument("--checkpoint", help="use this released-layout file instead of a random one")
    ap.add_argument("--json", help="also write the raw timings here")
    ap.add_argument("--system-blas", action="store_true",
                    help="call moshi_mlx.compute.prefer_system_blas() before importing MLX")
    args = ap.parse_args(argv)
    if args.system_blas:
        from moshi_mlx.compute import prefer_system_blas

        if prefer_system_blas() is None:
            print("no system BLAS loaded", file=sys.stderr)
            return 1

    import mlx.core as mx

    from moshi_mlx.config import mimi_202407
    from moshi_mlx.models.mimi.synthetic import speech_like_signal, write_random_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer-random.safetensors"
        if args.checkpoint:
            path = Path(args.checkpoint)
        else:
            write_random_checkpoint(path, mimi_202407(args.codebooks), seed=0)
        import gc

        gc.collect()
        mx.clear_cache()
        mx.reset_peak_memory()  # count only the benchmarked codec below
        pcm = speech_like_signal(50 * FRAME, 24000, seed=1)
        pcm_file = Path(tmp) / "pcm.npy"
        np.save(pcm_file, pcm)
        results: dict[str, dict] = {}
        for name, r in bench_in_process(path, pcm, args).items():
            results[LABELS[name]] = r
        if "openblas" in args.only and sys.platform == "linux":
            for label, r in (bench_openblas(path, args) or {}).items():
                results[label + " + OpenBLAS"] = r
        if "kyutai" in args.only:
            ky = bench_kyutai(path, pcm_file, args)
            if ky is not None:
                results[f"Kyutai moshi_mlx (mlx {ky.pop('mlx')})"] = ky

    print(f"\nMimi streaming encode+decode per 80 ms frame, batch 1, float32, {args.codebooks} codebooks")
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, mlx {mx.__version__}, "
          f"python {platform.python_version()}, default device {mx.default_device()}")
    print(f"peak memory: MLX {mx.get_peak_memory() / 2**20:.0f} MiB (ours), process RSS "
          f"{rss:.0f} MiB (whole process: ours, rustymimi, checkpoint generation)")
    print(f"| {'backend':<36} | p50 ms   | p95 ms   | enc p50  | dec p50  | RTF   | n   |")
    print(f"|{'-' * 38}|----------|----------|----------|----------|-------|-----|")
    for name, r in results.items():
        print(_row(name, r))
    # Code agreement of the streaming runs with ours (same audio, same weights, fresh states).
    ref = next(iter(results.values()), {}).get("codes")
    for name, r in list(results.items())[1:]:
        n = min(len(ref), len(r["codes"]))
        agree = np.mean(np.array(ref[:n]) == np.array(r["codes"][:n]))
        print(f"codes equal to ours: {name}: {100 * agree:.2f}% ({n} frames x {args.codebooks})")
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
