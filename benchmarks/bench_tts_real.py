"""Benchmark TTS at the real shape of kyutai/tts-1.6b-en_fr: ours against Kyutai's `moshi_mlx`.

Not a test: it measures and prints a markdown table. Random weights (both sides read the same
files), so the speech is noise; what is measured is speed and memory.

    python benchmarks/bench_tts_real.py --repo DIR [--quants bf16,q8,q4] [--steps 24]
        [--ours-dtypes auto] [--out benchmarks/results/tts.md]

`--repo DIR` is written first if it has no config.json (`python -m moshi_mlx.testing.real_tts
DIR`, in a child process so that this one stays small: a child inherits its parent's max RSS).
Then for each precision, ours and Kyutai's run one after the other (one process each, one model
in memory at a time) on the same text, voice and seed, for `--steps` steps:
- ours: `load_tts` (compute dtype `--ours-dtypes`: "auto" = float32 activations on a CPU with the
  RAM for it, see moshi_mlx/compute.py; "bfloat16" = as Kyutai's) + `speak` (this script's
  `--worker` mode); q8/q4: the bf16 model quantized in memory like Kyutai's `run_tts.py` (see
  `quantize_like_kyutai`), then the compute policy applied;
- Kyutai's: `kyutai_tts.py` under `KYUTAI_PYTHON` (their `TTSModel.generate` + their MLX Mimi,
  bf16 activations as their scripts; see its docstring).
Both decode each frame with Mimi as soon as it is complete. "First frame" is the time from the
call (script and voice preparation included, model load excluded) to the end of the first
1920-sample frame's Mimi decode, at step 19 on both sides (16 steps of text-to-audio delay + 2 of
acoustic delay); ours then drops two frames as PyTorch's `simple_generate` (its first audio
handed out, "first audio", comes two steps later). Per-step times are LM + state machine
(`TtsGen.step` / `LmGen.step`) and Mimi `decode_step` separately; "steady" is the median over the
steps that produce audio (depformer running: ours skips it during the 16 delay steps, Kyutai's
does not). RTF (steady) = (LM + Mimi ms per step) / 80 ms; below 1 is faster than real time.
Memory: MLX's peak (load + generation) and the process's max RSS.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

import moshi_mlx  # noqa: F401  (before MLX: routes its float32 matmuls to OpenBLAS on Linux)

log = logging.getLogger("bench_tts_real")
HERE = Path(__file__).resolve().parent
KYUTAI_PY = os.environ.get("KYUTAI_PYTHON", "")
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"
BITS = {"bf16": None, "q8": 8, "q4": 4}
TEXT = ("Hello, this is a test of streaming speech synthesis. The text leads and the audio "
        "follows, one word at a time, until the end of the sentence.")


def quantize_like_kyutai(lm: Any, bits: int) -> int:
    """Quantize `lm` in memory with the modules and group size of Kyutai's `run_tts.py` (which
    calls `nn.quantize` with its default group size 64 on the whole depformer and on each
    temporal layer's `self_attn` and `gating`): every Linear / Embedding under those paths.
    Our module paths equal Kyutai's MLX names, so the same predicate picks the same modules.
    Returns how many modules were quantized."""
    import mlx.nn as nn

    from moshi_mlx.quant import QUANTIZED_TYPES

    picked: list[str] = []

    def predicate(path: str, module: nn.Module) -> bool:
        parts = path.split(".")
        wanted = parts[0] == "depformer" or (
            parts[0] == "transformer" and len(parts) > 3 and parts[3] in ("self_attn", "gating"))
        ok = (wanted and hasattr(module, "to_quantized")
              and not isinstance(module, QUANTIZED_TYPES) and module.weight.shape[-1] % 64 == 0)
        if ok:
            picked.append(path)
        return ok

    nn.quantize(lm, group_size=64, bits=bits, class_predicate=predicate)
    return len(picked)


def worker(repo: str, quant: str, steps: int, seed: int, text: str, dtype: str,
           modules: str = "ours") -> dict[str, Any]:
    """Our side, in this process (module docstring). `modules` (q8/q4): "ours" = `load_tts(...,
    quant=)` (`moshi_mlx.tts.quant`), "kyutai" = `quantize_like_kyutai` (group 64)."""
    import resource

    import mlx.core as mx

    from moshi_mlx.compute import apply_policy, decide_policy
    from moshi_mlx.quant import quantized_modules
    from moshi_mlx.tts.generate import TtsGen
    from moshi_mlx.tts.speak import find_voice, load_tts, speak

    t0 = time.perf_counter()
    if BITS[quant] is None or modules == "ours":
        model = load_tts(repo, dtype=dtype, quant=quant)
    else:
        model = load_tts(repo, dtype="stored")
        quantize_like_kyutai(model.lm, BITS[quant])
        apply_policy(model.lm, decide_policy(dtype, model.lm))
    n_quant = len(quantized_modules(model.lm))
    mx.eval(model.lm.parameters())
    load_s = time.perf_counter() - t0
    act = model.lm.act_dtype
    voice = find_voice(model, None)

    step_s: list[float] = []
    mimi_s: list[float] = []
    first: list[float] = []  # seconds to the first decoded frame, steps run by then
    first_audio: list[float] = []
    step = TtsGen.step
    decode = model.codec.decode_step

    def timed_step(self: TtsGen, *args: Any, **kwargs: Any) -> Any:
        s = time.perf_counter()
        out = step(self, *args, **kwargs)  # returns host ints: already evaluated
        step_s.append(time.perf_counter() - s)
        print(f"step {len(step_s)}: {step_s[-1]:.2f} s", file=sys.stderr, flush=True)
        return out

    def timed_decode(*args: Any, **kwargs: Any) -> Any:
        s = time.perf_counter()
        out = decode(*args, **kwargs)
        mimi_s.append(time.perf_counter() - s)
        if not first:
            first.extend([time.perf_counter() - start, len(step_s)])
        return out

    def on_audio(_: Any) -> None:
        if not first_audio:
            first_audio.append(time.perf_counter() - start)

    TtsGen.step = timed_step  # type: ignore[method-assign]
    model.codec.decode_step = timed_decode  # type: ignore[method-assign]
    start = time.perf_counter()
    res = speak(model, text, voice, cfg_coef=2.0, seed=seed, max_steps=steps, on_audio=on_audio)
    wall = time.perf_counter() - start
    import numpy as np

    return {
        "impl": "ours", "quant": quant, "activations": str(act or "as stored").replace(
            "mlx.core.", ""), "dtype_flag": dtype, "quantized_modules": n_quant,
        "quant_modules": modules if BITS[quant] else None,
        "load_s": load_s, "steps": len(step_s), "wall_s": wall,
        "first_audio_s": first[0] if first else None,
        "first_audio_step": first[1] if first else None,
        "first_delivered_s": first_audio[0] if first_audio else None,
        "step_ms": [1000 * s for s in step_s], "mimi_ms": [1000 * s for s in mimi_s],
        "audio_s": len(res.pcm) / model.codec.sample_rate, "words": len(res.transcript),
        "pcm_rms": float(np.sqrt(np.mean(np.square(res.pcm)))) if len(res.pcm) else None,
        "peak_mem_mb": mx.get_peak_memory() / 1e6,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mlx": mx.__version__, "device": str(mx.default_device()),
    }


def run_side(cmd: list[str], openblas: bool, timeout: float) -> dict[str, Any]:
    """One worker process; `openblas`: Debian's OpenBLAS preloaded (ours loads it by itself
    anyway, `moshi_mlx.compute.prefer_system_blas`)."""
    env = dict(os.environ)
    if openblas and Path(OPENBLAS).exists():
        env["LD_PRELOAD"] = OPENBLAS
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE, env=env)
    except subprocess.TimeoutExpired as e:
        log.info("stderr so far: %s", (e.stderr or b"")[-400:])
        return {"error": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0:
        return {"error": " ".join((p.stderr or p.stdout).strip().splitlines()[-1:])}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    return out


def summarize(r: dict[str, Any], mimi_ms: float | None = None) -> dict[str, Any]:
    """Medians: LM ms per step before / from the first frame, Mimi ms per frame, steady RTF.
    A run stopped before its first frame (`--kyutai-quant-steps`) takes its steady LM time
    from every step but the first (Kyutai's depformer runs at every step) and `mimi_ms` (the
    same implementation's Mimi, measured in an earlier row; flagged `mimi_borrowed`)."""
    if "error" in r:
        return r
    steps, k = r["step_ms"], r["first_audio_step"]
    early, steady = (steps[: k - 1], steps[k - 1 :]) if k else ([], steps[1:])
    lm = median(steady) if steady else None
    own = median(r["mimi_ms"]) if r["mimi_ms"] else None
    mimi = own if own is not None else mimi_ms
    return dict(r, lm_ms_delay=median(early) if early else None, lm_ms=lm, mimi_ms_med=mimi,
                mimi_borrowed=own is None and mimi is not None,
                rtf=(lm + mimi) / 80 if lm is not None and mimi is not None else None)


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("first_audio_s", "lm_ms", "mimi_ms_med", "rtf", "peak_mem_mb", "error")
    return {k: r.get(k) for k in keys if k in r}


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| impl | weights | activations | first frame s (step) | ours: first audio s "
             "| LM ms/step, delay steps | LM ms/step, steady | Mimi ms/frame | RTF (steady) "
             "| MLX peak GB | max RSS GB | load s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        weights = r.get("quant", "?")
        if r.get("quant_modules") == "kyutai" or (r.get("impl") == "kyutai" and weights != "bf16"):
            weights += " (Kyutai's modules, g64)"
        elif r.get("quant_modules") == "ours":
            weights += f" (ours, {r['quantized_modules']} modules)"
        name = f"{r.get('impl', '?')} | {weights} | {r.get('activations', '?')}"
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} |||||||||")
            continue
        first = (f"{r['first_audio_s']:.1f} ({r['first_audio_step']})" if r["first_audio_step"]
                 else f"not reached in {r['steps']} steps")
        mimi = _f(r["mimi_ms_med"], ".0f") + (" *" if r.get("mimi_borrowed") else "")
        lines.append(
            f"| {name} | {first} "
            f"| {_f(r.get('first_delivered_s'), '.1f')} | {_f(r['lm_ms_delay'], '.0f')} "
            f"| {_f(r['lm_ms'], '.0f')} | {mimi} | {_f(r['rtf'], '.1f')} "
            f"| {r['peak_mem_mb'] / 1e3:.2f} | {r['max_rss_mb'] / 1e3:.2f} | {r['load_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True, help="TTS repo (written if missing)")
    ap.add_argument("--quants", default="bf16,q8,q4")
    ap.add_argument("--ours-dtypes", default="auto", help="comma list: auto, bfloat16, float32")
    ap.add_argument("--ours-quant-dtypes", help="--ours-dtypes for the q8/q4 rows (default: same)")
    ap.add_argument("--ours-modules", default="ours",
                    help="q8/q4 rows of ours, comma list: ours (load_tts quant=), kyutai "
                         "(Kyutai's run_tts.py module choice, group 64)")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--kyutai-quant-steps", type=int,
                    help="steps for Kyutai's q8/q4 rows (default --steps): their bf16-input "
                         "quantized matmuls are slow on a CPU; fewer steps give their LM step "
                         "time without reaching audio (Mimi time then from their bf16 row, *)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", default=TEXT)
    ap.add_argument("--timeout", type=float, default=1800, help="per process, seconds")
    ap.add_argument("--no-kyutai", action="store_true")
    ap.add_argument("--out", type=Path, help="markdown file (and .json beside it)")
    ap.add_argument("--worker", nargs=3, metavar=("QUANT", "DTYPE", "MODULES"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(str(a.repo), a.worker[0], a.steps, a.seed, a.text, *a.worker[1:])))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not (a.repo / "config.json").is_file():
        log.info("writing a random real-shape TTS repo to %s", a.repo)
        subprocess.run([sys.executable, "-m", "moshi_mlx.testing.real_tts", str(a.repo),
                        "--seed", str(a.seed)], check=True)
    common = ["--seed", str(a.seed), "--text", a.text]
    rows = []
    mimi: dict[str, float] = {}  # per implementation, from its first row with audio
    for q in a.quants.split(","):
        dtypes = a.ours_dtypes if BITS[q] is None else (a.ours_quant_dtypes or a.ours_dtypes)
        for dtype in dtypes.split(","):
            for mods in a.ours_modules.split(",") if BITS[q] else ["-"]:
                r = run_side([sys.executable, __file__, "--repo", str(a.repo), "--worker", q,
                              dtype, mods, "--steps", str(a.steps), *common], True, a.timeout)
                rows.append(summarize(dict(r, impl="ours", quant=q) if "error" in r else r,
                                      mimi.get("ours")))
                log.info("ours %s %s %s: %s", q, dtype, mods, _brief(rows[-1]))
        if KYUTAI_PY and not a.no_kyutai:
            steps = a.steps if BITS[q] is None else (a.kyutai_quant_steps or a.steps)
            r = run_side([KYUTAI_PY, str(HERE / "kyutai_tts.py"), str(a.repo), "--quant", q,
                          "--steps", str(steps), *common], False, a.timeout)
            rows.append(summarize(dict(r, impl="kyutai", quant=q) if "error" in r else r,
                                  mimi.get("kyutai")))
            log.info("kyutai %s: %s", q, _brief(rows[-1]))
        for r in rows:
            if r.get("mimi_ms") and not r.get("mimi_borrowed"):
                mimi.setdefault(r["impl"], r["mimi_ms_med"])
    versions = {r["impl"]: r.get("mlx") for r in rows if "mlx" in r}
    head = (f"{platform.platform()}, {os.cpu_count()} CPUs, MLX CPU backend; mlx: ours "
            f"{versions.get('ours')}, Kyutai's env {versions.get('kyutai')}; {a.steps} steps, "
            f"seed {a.seed}; command: python benchmarks/bench_tts_real.py --quants {a.quants} "
            f"--ours-dtypes {a.ours_dtypes} --ours-quant-dtypes {a.ours_quant_dtypes or a.ours_dtypes} "
            f"--ours-modules {a.ours_modules} --steps {a.steps}"
            f" --kyutai-quant-steps {a.kyutai_quant_steps or a.steps}")
    text = head + "\n\n" + table(rows) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
        a.out.with_suffix(".json").write_text(json.dumps(
            {"head": head, "text": a.text, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
