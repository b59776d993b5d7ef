"""File-to-file conversation (`cli.py run`) and the speed benchmark (`cli.py bench`).

`run_file`: the user's recording (any rate/channels, via `moshi_mlx.audio.wav`) is cut into 80 ms
frames, followed by `pad_s` seconds of silence so Moshi can answer after the user stops, and fed
through the same `Conversation` as the live chat; Moshi's audio is written at 24 kHz, one output
frame per input frame, aligned by index (output frame f is the answer to input frame f, whatever
the schedule). With a fixed seed the output is identical from run to run (the engine draws from
explicit per-step keys) and between schedules. `--schedule auto` runs serial here: a file has no
real-time budget and serial is the faster one on a CPU.

`bench`: the full per-frame pipeline (Mimi encode + LM step + Mimi decode) on low-level noise,
after warm-up, in the chosen schedule: frames per second, p50/p95 frame time against the 80 ms
budget, the stage times, peak memory.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..conversation import BUDGET_MS, FRAME_S, FRAME_SIZE, SAMPLE_RATE, FrameTiming, frames_of
from ..hub import ModelFiles
from .pipeline import Settings, load_model
from .session import SessionRecorder, percentile


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, kB on Linux


def run_file(files: ModelFiles, settings: Settings, input_wav: Path, output_wav: Path,
             transcript: Path | None = None, pad_s: float = 4.0, progress: Any = None,
             ) -> dict[str, Any]:
    """Converse with a recorded user; returns the transcript dict (also written if asked)."""
    from .wav import AudioFileError, read_wav, write_wav

    pcm = read_wav(input_wav, SAMPLE_RATE)
    if pcm.size == 0:
        raise AudioFileError(f"{input_wav}: no audio samples")
    model = load_model(files, settings)
    conv = model.conversation()
    rec = SessionRecorder(keep_audio=True)
    frames = list(frames_of(pcm, pad_s=pad_s))
    t0 = time.perf_counter()
    for i, frame in enumerate(frames):
        rec.add_user(frame)
        rec.add(conv.step(frame))
        if progress is not None:
            progress(i + 1, len(frames))
    rec.add(conv.flush())  # pipelined: the last frame's audio
    wall = time.perf_counter() - t0
    write_wav(output_wav, rec.moshi_audio(), SAMPLE_RATE)
    stats = rec.stats(wall_s=round(wall, 3), input_s=round(len(pcm) / SAMPLE_RATE, 3), pad_s=pad_s,
                      schedule=conv.schedule)
    sets = settings.to_dict() | {"input": str(input_wav), "output": str(output_wav)}
    data = rec.transcript(model=model.describe(), settings=sets, seed=settings.seed, stats=stats)
    if transcript is not None:
        rec.write_transcript(transcript, model=model.describe(), settings=sets, seed=settings.seed,
                             stats=stats)
    return data


def bench(files: ModelFiles, settings: Settings, frames: int = 100, warmup: int = 8) -> dict[str, Any]:
    """Time `frames` pipeline steps after `warmup` steps; returns the numbers as a dict."""
    import mlx.core as mx

    rss0 = peak_rss_mb()
    model = load_model(files, settings)
    conv, choice, _ = model.start(warmup)  # compiles; picks the schedule for --schedule auto
    rng = np.random.default_rng(0)
    noise = (0.01 * rng.standard_normal((frames + warmup, FRAME_SIZE))).astype(np.float32)
    for i in range(warmup):  # warm the real schedule too (allocator pools, CPU stream)
        conv.step(noise[i])
    mx.reset_peak_memory()
    timings: list[FrameTiming] = []
    t0 = time.perf_counter()
    for i in range(frames):
        timings += [e for e in conv.step(noise[warmup + i]) if isinstance(e, FrameTiming)]
    conv.flush()
    wall = time.perf_counter() - t0
    total = [t.total_ms for t in timings]

    def p(values: list[float], q: float) -> float:
        return round(percentile(values, q), 2)

    return {
        "model": model.describe(),
        "schedule": choice.schedule, "schedule_reason": choice.reason,
        "frames": frames,
        "frames_per_s": round(frames / wall, 2),
        "realtime_factor": round(frames * FRAME_S / wall, 3),
        "frame_ms_p50": p(total, 50), "frame_ms_p95": p(total, 95),
        "encode_ms_p50": p([t.encode_ms for t in timings], 50),
        "lm_ms_p50": p([t.lm_ms for t in timings], 50),
        "decode_ms_p50": p([t.decode_ms for t in timings], 50),
        "budget_ms": BUDGET_MS,
        "mlx_peak_memory_mb": round(mx.get_peak_memory() / 2**20, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_load_mb": round(rss0, 1),
        "device": f"{platform.machine()} {platform.system()}, mlx {mx.__version__}, "
                  f"{mx.default_device()}",
        "echo_ms_p50": _echo_cost(),
    }


def _echo_cost() -> float | None:
    """The echo canceller's cost per frame (chat adds it to each frame), None without pyaec."""
    from .echo import EchoCancellerUnavailable, measure_cost

    try:
        return round(percentile(measure_cost(), 50), 2)
    except EchoCancellerUnavailable:
        return None


def format_bench(r: dict[str, Any]) -> str:
    m = r["model"]
    ok = "keeps real time" if r["frame_ms_p95"] <= r["budget_ms"] else "too slow for real time"
    return "\n".join([
        f"model      {m['name']} {m['precision']} (compute {m['dtype']}, mimi {m['mimi_backend']})",
        f"device     {r['device']}",
        f"schedule   {r['schedule']} ({r['schedule_reason']})",
        f"frames     {r['frames']} at {r['frames_per_s']:.1f} frames/s "
        f"({r['realtime_factor']:.2f}x real time)",
        f"frame time p50 {r['frame_ms_p50']:.1f} ms, p95 {r['frame_ms_p95']:.1f} ms "
        f"(budget {r['budget_ms']:.0f} ms): {ok}",
        f"  of which encode {r['encode_ms_p50']:.1f}, LM {r['lm_ms_p50']:.1f}, "
        f"decode {r['decode_ms_p50']:.1f} ms (p50)",
        f"memory     MLX peak {r['mlx_peak_memory_mb']:.0f} MB, process peak RSS "
        f"{r['peak_rss_mb']:.0f} MB",
        "echo       " + (f"canceller {r['echo_ms_p50']:.1f} ms per frame (p50, chat --echo)"
                         if r.get("echo_ms_p50") is not None else
                         "canceller unavailable (pip install pyaec)"),
    ])
