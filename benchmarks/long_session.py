"""Long-session benchmark: 30 minutes of conversation (22,500 frames) through the file-mode pipeline.

    python benchmarks/long_session.py [--frames 22500] [--model-dir DIR] [--json out.json]

Kyutai's MLX and Rust apps stop or degrade after about 5 minutes (fixed-size buffers, a rotating kv
cache trim their own TODO calls wrong). This drives `Conversation.step` (Mimi encode -> LmGen.step ->
Mimi decode, exactly what `cli.py run` and `chat` do) well past the LM's 3000-step context with a
tiny random model (written to a temp dir unless --model-dir is given), and reports per 1000-frame
window: frame time p50/p95, process RSS and MLX active memory, and output sanity (Moshi's audio RMS,
NaN/inf count, share of non-padding text tokens and their entropy, distinct audio codes). Memory must stay flat and the
numbers after frame 3000 must look like the ones before. Prints a table; asserts nothing.

The user is synthetic: 2 s bursts of band-limited noise at speech level separated by 1 s pauses.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FRAME = 1920


def rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def entropy_bits(tokens: list[int]) -> float:
    """Entropy of the text-token histogram: collapses towards 0 if generation degenerates."""
    if not tokens:
        return 0.0
    p = np.bincount(tokens).astype(np.float64)
    p = p[p > 0] / len(tokens)
    return float(-(p * np.log2(p)).sum())


def user_frame(i: int, rng: np.random.Generator) -> np.ndarray:
    talking = (i % 38) < 25  # 25 frames (2 s) of "speech", 13 frames (~1 s) of pause
    if not talking:
        return np.zeros(FRAME, np.float32)
    x = rng.standard_normal(FRAME + 8).astype(np.float32)
    x = np.convolve(x, np.ones(8) / 8, mode="valid")[:FRAME]  # crude low-pass
    return (0.1 * x / (x.std() + 1e-8)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=22_500)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--model-dir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)

    import mlx.core as mx

    from moshi_mlx.audio.pipeline import Settings, load_model
    from moshi_mlx.conversation import AudioFrame, FrameTiming, TextPiece
    from moshi_mlx.hub import resolve
    from moshi_mlx.testing.tiny_repo import write_tiny_repo

    tmp = None
    if a.model_dir is None:
        tmp = tempfile.TemporaryDirectory()
        a.model_dir = write_tiny_repo(Path(tmp.name) / "tiny", "bf16", seed=0)
    model = load_model(resolve(model_dir=a.model_dir), Settings(seed=a.seed))
    conv = model.conversation()
    conv.warmup(4)
    ctx = model.lm.cfg.context
    rng = np.random.default_rng(a.seed)
    print(f"model {a.model_dir} (context {ctx} steps), {a.frames} frames = "
          f"{a.frames * 0.08 / 60:.1f} min of conversation; mlx {mx.__version__}")
    rows = []
    start_rss, start_mx = rss_mb(), mx.get_active_memory() / 2**20
    print(f"start: RSS {start_rss:.1f} MB, MLX active {start_mx:.1f} MB")
    hdr = (f"{'frames':>13} {'p50 ms':>7} {'p95 ms':>7} {'RSS MB':>7} {'MLX MB':>7} "
           f"{'out RMS':>8} {'bad':>4} {'text %':>6} {'H text':>6} {'codes':>6}")
    print(hdr)
    t_all = time.perf_counter()
    ms: list[float] = []
    sq, n_samples, bad, text, codes = 0.0, 0, 0, 0, set()
    tokens: list[int] = []
    for i in range(a.frames):
        for ev in conv.step(user_frame(i, rng)):
            if isinstance(ev, FrameTiming):
                ms.append(ev.total_ms)
            elif isinstance(ev, AudioFrame):
                bad += int((~np.isfinite(ev.pcm)).sum())
                sq += float(np.square(np.nan_to_num(ev.pcm)).sum())
                n_samples += ev.pcm.size
            elif isinstance(ev, TextPiece):
                text += 1
                tokens.append(ev.token)
        if conv.last_audio_codes is not None:
            codes.update(conv.last_audio_codes.reshape(-1).tolist())
        if (i + 1) % a.window == 0 or i + 1 == a.frames:
            n = len(ms)
            row = {
                "first": i + 1 - n, "last": i, "p50_ms": float(np.percentile(ms, 50)),
                "p95_ms": float(np.percentile(ms, 95)), "rss_mb": rss_mb(),
                "mlx_active_mb": mx.get_active_memory() / 2**20,
                "out_rms": (sq / max(n_samples, 1)) ** 0.5, "nonfinite": bad,
                "text_share": text / n, "text_entropy_bits": entropy_bits(tokens),
                "distinct_codes": len(codes), "past_context": i + 1 > (ctx or 0),
            }
            rows.append(row)
            print(f"{row['first']:>6}-{row['last']:<6} {row['p50_ms']:7.2f} {row['p95_ms']:7.2f} "
                  f"{row['rss_mb']:7.1f} {row['mlx_active_mb']:7.1f} {row['out_rms']:8.4f} "
                  f"{bad:4d} {100 * row['text_share']:6.1f} {row['text_entropy_bits']:6.2f} "
                  f"{len(codes) or '-':>6}", flush=True)
            ms, sq, n_samples, bad, text, codes, tokens = [], 0.0, 0, 0, 0, set(), []
    wall = time.perf_counter() - t_all
    before = [r for r in rows if not r["past_context"]]
    after = [r for r in rows if r["past_context"]]
    summary = {
        "frames": a.frames, "wall_s": wall, "context": ctx,
        "rss_start_mb": start_rss, "rss_end_mb": rss_mb(),
        "mlx_active_start_mb": start_mx, "mlx_active_end_mb": mx.get_active_memory() / 2**20,
        "p50_ms_before_context": float(np.median([r["p50_ms"] for r in before])) if before else None,
        "p50_ms_after_context": float(np.median([r["p50_ms"] for r in after])) if after else None,
        "out_rms_before_context": float(np.mean([r["out_rms"] for r in before])) if before else None,
        "out_rms_after_context": float(np.mean([r["out_rms"] for r in after])) if after else None,
        "nonfinite_samples": int(sum(r["nonfinite"] for r in rows)),
        "text_entropy_before_context": float(np.mean([r["text_entropy_bits"] for r in before]))
        if before else None,
        "text_entropy_after_context": float(np.mean([r["text_entropy_bits"] for r in after]))
        if after else None,
    }
    print(json.dumps(summary, indent=1))
    if a.json:
        a.json.write_text(json.dumps({"summary": summary, "windows": rows}, indent=1) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
