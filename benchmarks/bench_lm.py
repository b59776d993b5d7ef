"""Benchmark one LM generation step (ms per 80 ms frame): ours against Kyutai's `moshi_mlx`.

Not a test: it asserts nothing, it measures and prints a markdown table (results/lm.md explains it).

    python benchmarks/bench_lm.py [--configs small,7b-l1] [--quants bf16,q8,q4]
        [--acts bf16,float32,default,float32R,bf16S] [--frames 20] [--frames-7b 6]
        [--prefill N] [--greedy] [--out benchmarks/results/lm_run.md] [--kyutai-python PY]

For each config, random weights are written ONCE in Kyutai's MLX layout (`bench_lm_setup.py`).
Each (config, weights, activation recipe) row then runs ours (`moshi_mlx.load_lm` +
`moshi_mlx.engine.LmGen.step`, this script's `--worker` mode, this interpreter) and Kyutai's
(`kyutai_lm.py` under Kyutai's env, moshi_mlx 0.3.0 with its pinned mlx: `--kyutai-python` or
`$KYUTAI_PYTHON`, see `docs/environments.md`; without one, only ours runs) on the same file, in two
fresh processes. Default `--mode lockstep`: both stay loaded and take turns frame by frame (who
goes first alternates), so a shared machine's background load hits both alike; `sequential` runs
them one after the other. Both feed the same pseudo-random user codes, sample with top-k (text
0.7/25, audio 0.8/250), materialize the text and audio tokens of every frame, exclude warm-up
frames, and report wall and CPU (process) time per frame and MLX peak memory.
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

from bench_lm_setup import (
    FILES,
    QUANTS,
    bench_configs,
    float32_scales,
    prepare,
    repack_quantized_for_cpu,
)
from lm_timing import run_frames, user_codes

log = logging.getLogger("bench_lm")

HERE = Path(__file__).resolve().parent
# Our activation recipes -> Kyutai's: "default" = each side's default (ours: dtype None, chosen per
# platform; theirs: bf16 as in their loaders); "float32R" = float32 + CPU-repacked quantized Linears.
KYUTAI_ACT = {"default": "bf16", "float32R": "float32", "bf16S": "bf16", "bf16": "bf16",
              "float32": "float32"}
LABELS = {"default": "default (ours: auto)", "float32R": "float32 + q8 CPU repack (proposal)",
          "bf16S": "bf16 + f32 scales (proposal)"}


# Our side (runs in a fresh subprocess) -----------------------------------------------------------
def worker(args: argparse.Namespace) -> int:
    """Time our LmGen.step; print one JSON line like kyutai_lm.py (same --lockstep protocol)."""
    import mlx.core as mx

    from moshi_mlx import load_lm
    from moshi_mlx.engine import LmGen
    from moshi_mlx.sampling import DEFAULT_AUDIO, DEFAULT_TEXT, Sampler

    cfg = json.loads(Path(args.config).read_text())
    if QUANTS[args.quant] is not None:
        bits, group = QUANTS[args.quant]
        cfg["quantization"] = {"group_size": group, "bits": bits}
    mx.random.seed(args.seed)
    t_load = time.perf_counter()
    dtype = {"bf16": "bfloat16", "bf16S": "bfloat16", "default": None}.get(args.act, "float32")
    lm = load_lm(args.weights, config=cfg, dtype=dtype)
    swapped = 0
    if args.act == "float32R":  # proposal: quantized Linears repacked for the CPU kernel
        swapped = repack_quantized_for_cpu(lm)
    if args.act == "bf16S":  # proposal: float32 scales/biases, bf16 activations
        swapped = float32_scales(lm)
    mx.eval(lm.parameters())
    load_s = time.perf_counter() - t_load
    if args.greedy:
        ts, aus = Sampler(0.0), Sampler(0.0)
    else:
        ts, aus = DEFAULT_TEXT, DEFAULT_AUDIO
    gen = LmGen(lm, text_sampler=ts, audio_sampler=aus, batch_size=1, seed=args.seed)
    if args.prefill:  # deep-context timing: the next steps attend over `prefill` positions
        dt = mx.bfloat16 if args.act.startswith("bf16") else mx.float32
        xs = (mx.random.normal((1, args.prefill, cfg["dim"])) * 0.1).astype(dt)
        mx.eval(lm.temporal(xs, gen.cache))
    codes = user_codes(args.warmup + args.frames, cfg["n_q"] - cfg["dep_q"], cfg["card"], args.seed)

    def step(user: mx.array) -> tuple[mx.array, Any]:
        out = gen.step(user)
        return out.text, out.audio

    res = {
        "impl": "ours",
        "quant": args.quant,
        "act": args.act,
        "act_dtype": str(getattr(lm, "act_dtype", None)),
        "repacked_linears": swapped,
        "load_s": load_s,
        **run_frames(step, codes, args.warmup, args.lockstep),
    }
    sys.stdout.write(json.dumps(res) + "\n")
    return 0


# Driver ------------------------------------------------------------------------------------------
def _cmd(impl: str, d: Path, quant: str, act: str, frames: int, args: argparse.Namespace) -> list:
    common = [
        str(d / "config.json"),
        str(d / FILES[quant]),
        "--quant", quant,
        "--frames", str(frames), "--warmup", str(args.warmup), "--seed", str(args.seed),
        "--prefill", str(args.prefill),
    ] + (["--greedy"] if args.greedy else [])
    if impl == "ours":
        return [sys.executable, str(Path(__file__).resolve()), "--worker", "--act", act, *common]
    kact = KYUTAI_ACT.get(act, act)
    return [args.kyutai_python, str(HERE / "kyutai_lm.py"), "--act", kact, *common]


OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"


def _env(args: argparse.Namespace) -> dict:
    """Worker environment: with --blas openblas both sides' MLX calls Debian's OpenBLAS for float32
    matmuls (LD_PRELOAD; what our cli does via moshi_mlx.compute.prefer_system_blas)."""
    env = dict(os.environ)
    if args.blas == "openblas":
        env["LD_PRELOAD"] = OPENBLAS
    return env


def _failed(impl: str, text: str, rc: int | None) -> dict:
    tail = text.strip().splitlines()[-6:]
    log.warning("%s failed (rc %s): %s", impl, rc, " | ".join(tail))
    return {"impl": impl, "error": tail[-1] if tail else f"rc {rc}"}


def run_one(impl: str, d: Path, quant: str, act: str, frames: int,
            args: argparse.Namespace) -> dict:
    """Sequential mode: one fresh subprocess, alone on the machine."""
    cmd = _cmd(impl, d, quant, act, frames, args)
    # Run from /tmp so neither interpreter picks up a package from the current directory.
    p = subprocess.run(cmd, capture_output=True, text=True, cwd="/tmp", timeout=args.timeout,
                       env=_env(args))
    if p.returncode != 0:
        return _failed(impl, p.stderr or p.stdout, p.returncode)
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_lockstep(impls: list[str], d: Path, quant: str, act: str, frames: int,
                 args: argparse.Namespace) -> dict[str, dict]:
    """Both implementations loaded side by side in two processes that take turns frame by frame
    (who goes first alternates), so background load on a shared machine hits both alike."""
    procs: dict[str, subprocess.Popen] = {}
    errs: dict[str, Any] = {}
    for impl in impls:
        errs[impl] = tempfile.TemporaryFile("w+")
        procs[impl] = subprocess.Popen(
            [*_cmd(impl, d, quant, act, frames, args), "--lockstep"], cwd="/tmp", text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errs[impl], env=_env(args))
    out: dict[str, dict] = {}

    def expect(impl: str, prefix: str) -> str | None:
        p = procs[impl]
        while True:
            line = p.stdout.readline()
            if not line:
                p.wait()
                errs[impl].seek(0)
                out[impl] = _failed(impl, errs[impl].read(), p.returncode)
                return None
            if line.startswith(prefix):
                return line

    for impl in impls:
        expect(impl, "READY")
    order = list(impls)
    for i in range(args.warmup + frames):
        for impl in order if i % 2 == 0 else order[::-1]:
            if impl in out:
                continue
            procs[impl].stdin.write("go\n")
            procs[impl].stdin.flush()
            expect(impl, "FRAME")
    for impl in impls:
        if impl not in out:
            line = expect(impl, "{")
            if line is not None:
                out[impl] = json.loads(line)
                procs[impl].wait()
        errs[impl].close()
    return out


def fmt_row(name: str, quant: str, act: str, ours: dict, theirs: dict) -> str:
    def t(r: dict) -> str:
        mark = " (†)" if r.get("reused") else ""
        return "err" if "error" in r else f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f}{mark}"

    def c(r: dict) -> str:
        return "-" if "error" in r or "cpu_p50_ms" not in r else f"{r['cpu_p50_ms']:.1f}"

    def m(r: dict) -> str:
        return "-" if "error" in r else f"{r['peak_mem_mb']:.0f}"

    ok = "error" not in ours and "error" not in theirs
    ratio = f"{ours['p50_ms'] / theirs['p50_ms']:.2f}" if ok else "-"
    cok = ok and "cpu_p50_ms" in ours and "cpu_p50_ms" in theirs
    cratio = f"{ours['cpu_p50_ms'] / theirs['cpu_p50_ms']:.2f}" if cok else "-"
    label = LABELS.get(act, act)
    return (f"| {name} | {quant} | {label} | {t(ours)} | {t(theirs)} | **{ratio}** | {c(ours)} "
            f"| {c(theirs)} | {cratio} | {m(ours)} | {m(theirs)} |")


HEADER = (
    "| config | weights | activations | ours p50 / p95 ms | Kyutai p50 / p95 ms | ratio p50 "
    "| ours CPU ms | Kyutai CPU ms | ratio CPU | ours peak MB | Kyutai peak MB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("config", nargs="?")
    ap.add_argument("weights", nargs="?")
    ap.add_argument("--quant", default="bf16")
    ap.add_argument("--act", default="bf16")
    ap.add_argument("--configs", default="small,7b-l1")
    ap.add_argument("--quants", default="bf16,q8,q4")
    ap.add_argument("--acts", default="bf16,float32,default,float32R",
                    help="bf16, float32, default (each side's default dtype), float32R (float32 + "
                         "quantized Linears repacked for the CPU kernel), bf16S (bf16 with float32 "
                         "quantization scales); the last two are proposals, not the package")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--frames-7b", type=int, default=6, help="timed frames for the 7b-* configs")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="runs per row and impl; best p50 kept")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--blas", choices=("bundled", "openblas"), default="bundled",
                    help="openblas: preload Debian's libopenblas0-pthread in both workers")
    ap.add_argument("--prefill", type=int, default=0,
                    help="time frames after this many context positions (temporal KV caches filled "
                         "with random inputs first)")
    ap.add_argument("--impls", default="ours,kyutai")
    ap.add_argument("--kyutai-python", default=os.environ.get("KYUTAI_PYTHON"),
                    help="interpreter of Kyutai's moshi_mlx env (default: $KYUTAI_PYTHON)")
    ap.add_argument("--mode", choices=("lockstep", "sequential"), default="lockstep")
    ap.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "moshi_bench_lm"))
    ap.add_argument("--out", default=None, help="markdown file for the table (also writes .json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.worker:
        return worker(args)

    cfgs = bench_configs()
    quants = args.quants.split(",")
    impls = args.impls.split(",")
    if "kyutai" in impls and not args.kyutai_python:
        log.warning("no Kyutai env (--kyutai-python / $KYUTAI_PYTHON): timing ours only")
        impls.remove("kyutai")
    rows, results = [], []
    kyutai_done: dict[tuple, dict] = {}  # Kyutai runs reused by rows with the same Kyutai recipe
    for name in args.configs.split(","):
        d = prepare(name, cfgs[name], Path(args.work), quants, args.seed)
        frames = args.frames_7b if name.startswith("7b") else args.frames
        for quant in quants:
            for act in args.acts.split(","):
                if quant == "bf16" and act in ("float32R", "bf16S"):
                    continue  # nothing to repack
                best: dict[str, dict] = {}
                kkey = (name, quant, KYUTAI_ACT.get(act, act))
                todo = [i for i in impls if not (i == "kyutai" and kkey in kyutai_done)]
                if len(todo) < len(impls):
                    best["kyutai"] = dict(kyutai_done[kkey], reused=True)
                for _ in range(args.repeats):
                    if args.mode == "lockstep":
                        got = run_lockstep(todo, d, quant, act, frames, args)
                    else:
                        got = {i: run_one(i, d, quant, act, frames, args) for i in todo}
                    for impl, r in got.items():
                        if impl not in best or ("error" not in r and (
                                "error" in best[impl] or r["p50_ms"] < best[impl]["p50_ms"])):
                            best[impl] = r
                if "kyutai" in best and "error" not in best["kyutai"]:
                    kyutai_done.setdefault(kkey, best["kyutai"])
                ours = best.get("ours", {"error": "skipped"})
                theirs = best.get("kyutai", {"error": "skipped"})
                label = f"{name} @{args.prefill}" if args.prefill else name
                label += ", OpenBLAS" if args.blas == "openblas" else ""
                rows.append(fmt_row(label, quant, act, ours, theirs))
                log.info(rows[-1])
                results.append({"config": name, "quant": quant, "act": act,
                                "frames": frames, "ours": ours, "kyutai": theirs})
    table = HEADER + "\n" + "\n".join(rows)
    if args.greedy:  # same weights + same timing convention -> the same greedy text tokens
        agree = []
        for r in results:
            a, b = r["ours"].get("text_tokens"), r["kyutai"].get("text_tokens")
            if a and b:
                n = sum(x == y for x, y in zip(a, b, strict=False))
                agree.append(f"{r['config']} {r['quant']} {r['act']}: {n}/{len(a)}")
        table += "\n\nGreedy text tokens equal to Kyutai's: " + "; ".join(agree)
    sys.stdout.write(table + "\n")
    if args.out:
        versions = {r[k]["impl"]: (r[k].get("mlx"), r[k].get("moshi_mlx")) for r in results
                    for k in ("ours", "kyutai") if "mlx" in r[k]}
        meta = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}; "
                f"{args.frames} timed frames (7b-*: {args.frames_7b}) after {args.warmup} warm-up, best p50 of "
                f"{args.repeats} run(s); BLAS: {args.blas}; versions (mlx, moshi_mlx): {versions}")
        Path(args.out).write_text(table + "\n\n" + meta + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
