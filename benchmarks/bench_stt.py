"""Benchmark streaming speech-to-text at Kyutai's STT shapes: ours against Kyutai's `moshi_mlx`.

Not a test: it measures and prints a markdown table (real-time factor = time per 80 ms frame / 80).

    python benchmarks/bench_stt.py [--configs stt-1b,stt-2.6b-l12] [--quants bf16,q8,q4]
        [--frames 12] [--out benchmarks/results/stt.md]

Random weights at the real shapes are written once per config in Kyutai's MLX layout (bf16; q8 =
8 bits / group 64 and q4 = 4 bits / group 32 over every Linear and Embedding, as their files),
then each (config, precision) row runs, one process after the other on the same file:
- ours: `moshi_mlx.load_lm` (default compute dtype: float32 activations on a CPU) +
  `moshi_mlx.stt.SttGen.step` (this script's `--worker` mode);
- Kyutai's: `kyutai_stt.py` under their environment (`KYUTAI_PYTHON`, moshi_mlx 0.3.0 with its
  pinned mlx): their `Lm` in bf16 and `LmGen.step_with_extra_heads`, as their STT scripts.
Both feed the same pseudo-random user codes (32 codebooks), decode greedily, materialize the text
token and VAD heads of every frame, exclude warm-up frames, and report the median wall time per
frame and MLX's peak memory (max RSS is not comparable here: a child process inherits the
parent's high-water mark, which includes writing the random weights). The audio codec's encoder cost per frame (real-size random
Mimi, our MLX Mimi and rustymimi) is measured once and added for the end-to-end RTF.
stt-2.6b has 48 layers; `stt-2.6b-l12` keeps 12 of them (time per layer is what scales).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_lm_setup import FILES, QUANTS, quantize_weights, random_weights
from lm_timing import run_frames, user_codes

log = logging.getLogger("bench_stt")
HERE = Path(__file__).resolve().parent
KYUTAI_PY = os.environ.get("KYUTAI_PYTHON", "")
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"

STT_BASE: dict[str, Any] = dict(
    dim=2048, text_card=8000, existing_text_padding_id=3, n_q=32, dep_q=0, card=2048,
    num_heads=16, num_layers=16, hidden_scale=4.125, causal=True, layer_scale=None, context=750,
    max_period=100000, gating="silu", norm="rms_norm_f32", positional_embedding="rope",
    depformer_dim=1024, depformer_dim_feedforward=4224, depformer_num_heads=16,
    depformer_num_layers=6, depformer_pos_emb="none", delays=[0] * 33,
    extra_heads_num_heads=4, extra_heads_dim=6,
)
CONFIGS = {
    "stt-1b": {},
    "stt-2.6b-l12": dict(num_heads=32, num_layers=12, context=375, text_card=4000,
                         extra_heads_num_heads=0),
}


def prepare(name: str, cfg: dict, work: Path, quants: list[str], seed: int = 0) -> Path:
    import mlx.core as mx
    import numpy as np

    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    if all((d / FILES[q]).exists() for q in quants):
        return d
    t0 = time.perf_counter()
    w = random_weights(cfg, seed)
    rng = np.random.default_rng(seed + 1)
    for i in range(cfg["extra_heads_num_heads"]):
        h = rng.standard_normal((cfg["extra_heads_dim"], cfg["dim"]), dtype=np.float32)
        w[f"extra_heads.{i}.weight"] = mx.array(h * cfg["dim"] ** -0.5).astype(mx.bfloat16)
    mx.save_safetensors(str(d / FILES["bf16"]), w)
    for q in quants:
        if QUANTS[q] is not None:
            mx.save_safetensors(str(d / FILES[q]), quantize_weights(w, *QUANTS[q]))
    (d / "config.json").write_text(json.dumps(cfg, indent=1))
    log.info("%s: %.0f M params written in %.0f s", name,
             sum(v.size for v in w.values()) / 1e6, time.perf_counter() - t0)
    return d


def worker(cfg_path: str, weights: str, frames: int, warmup: int) -> dict[str, Any]:
    """Our side, in this process: load_lm (default dtype) + SttGen.step per frame."""
    import mlx.core as mx

    from moshi_mlx import load_lm
    from moshi_mlx.stt.gen import SttGen

    cfg = json.loads(Path(cfg_path).read_text())
    t0 = time.perf_counter()
    lm = load_lm(weights, config=cfg)
    load_s = time.perf_counter() - t0
    gen = SttGen(lm, 1)

    def step(user: mx.array):
        out = gen.step(user)
        return mx.array(out.tokens), None

    res = run_frames(step, user_codes(frames + warmup, cfg["n_q"], cfg["card"], 1), warmup, False)
    res["load_s"] = load_s
    return res


def mimi_encode_ms(frames: int = 8) -> dict[str, float]:
    """Encoder ms per frame of a real-size random Mimi: ours (MLX) and rustymimi."""
    import numpy as np
    from safetensors.numpy import save_file

    from moshi_mlx.codec import load_mimi
    from moshi_mlx.config import mimi_202407
    from moshi_mlx.testing.tiny_repo import build_mimi_weights

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mimi.safetensors"
        save_file(build_mimi_weights(mimi_202407(32), 0, codebooks_from_data=False), str(path))
        x = (0.1 * np.random.default_rng(0).standard_normal((1, 1, 1920))).astype(np.float32)
        for backend in ("mlx", "rustymimi"):
            codec = load_mimi(path, num_codebooks=32, backend=backend)
            st = codec.init_state(1)
            codec.encode_step(x, st)
            times = []
            for _ in range(frames):
                t0 = time.perf_counter()
                codec.encode_step(x, st)
                times.append((time.perf_counter() - t0) * 1000)
            out[backend] = float(np.median(times))
    return out


def run_side(cmd: list[str], openblas: bool, timeout: float = 3600) -> dict[str, Any]:
    """One worker process; `openblas`: Debian's OpenBLAS preloaded for MLX's float32 matmuls (what
    our cli.py does by itself, `moshi_mlx.compute.prefer_system_blas`)."""
    env = dict(os.environ)
    if openblas and Path(OPENBLAS).exists():
        env["LD_PRELOAD"] = OPENBLAS
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE, env=env)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]], mimi: dict[str, float]) -> str:
    lines = [
        "| config | precision | ours ms/frame | ours RTF (LM) | ours RTF (+MLX Mimi) "
        "| ours MLX peak MB | Kyutai ms/frame | Kyutai RTF (LM) | Kyutai RTF (+rustymimi) "
        "| Kyutai MLX peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cells(r: dict | None, codec_ms: float) -> str:
        if not r or "error" in r:
            return f"{(r or {}).get('error', 'not run')} | | | "
        ms = r["p50_ms"]
        return (f"{ms:.0f} | {ms / 80:.2f} | {(ms + codec_ms) / 80:.2f} | "
                f"{r['peak_mem_mb']:.0f}")

    for r in rows:
        lines.append(f"| {r['config']} | {r['quant']} | {cells(r['ours'], mimi.get('mlx', 0))} | "
                     f"{cells(r.get('kyutai'), mimi.get('rustymimi', 0))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--quants", default="bf16,q8,q4")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "moshi_mlx_bench_stt")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--blas", choices=("as-shipped", "openblas", "bundled"), default="as-shipped",
                    help="as-shipped: ours with OpenBLAS (as our CLI), Kyutai's with MLX's own")
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "WEIGHTS"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], a.frames, a.warmup)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quants = a.quants.split(",")
    rows = []
    for name in a.configs.split(","):
        cfg = dict(STT_BASE, **CONFIGS[name])
        d = prepare(name, cfg, a.work, quants)
        for q in quants:
            w = str(d / FILES[q])
            common = ["--frames", str(a.frames), "--warmup", str(a.warmup)]
            row = {"config": name, "quant": q}
            row["ours"] = run_side([sys.executable, __file__, "--worker", str(d / "config.json"), w,
                                    *common], a.blas != "bundled")
            if KYUTAI_PY:
                row["kyutai"] = run_side([KYUTAI_PY, str(HERE / "kyutai_stt.py"),
                                          str(d / "config.json"), w, "--quant", q, *common],
                                         a.blas == "openblas")
            log.info("%s %s: %s", name, q, {k: v.get("p50_ms", v) for k, v in row.items()
                                            if isinstance(v, dict)})
            rows.append(row)
    mimi = mimi_encode_ms()
    head = (f"{platform.platform()}, {os.cpu_count()} CPUs; BLAS {a.blas}; frames {a.frames} after "
            f"{a.warmup} warm-up; Mimi encoder ms/frame: ours (MLX) {mimi['mlx']:.0f}, "
            f"rustymimi {mimi['rustymimi']:.0f}")
    text = head + "\n\n" + table(rows, mimi) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
        a.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "mimi_ms": mimi},
                                                         indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
