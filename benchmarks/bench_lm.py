"""Benchmark one LM generation step (ms per 80 ms frame): ours against Kyutai's `moshi_mlx`.

Not a test: it asserts nothing, it measures and prints a markdown table.

    /work/venv/bin/python benchmarks/bench_lm.py [--configs small,7b-l1] [--quants bf16,q8,q4]
        [--acts bf16,float32] [--frames 20] [--out benchmarks/results/lm.md]

For each config it writes random weights ONCE in Kyutai's MLX key layout (`model.safetensors` bf16,
`model.q8.safetensors` 8 bits / group 64, `model.q4.safetensors` 4 bits / group 32, all Linear and
Embedding layers quantized as Kyutai's `quantize_mlx.py` does) plus `config.json`. Every
(config, precision, activation dtype) row then runs two fresh subprocesses on the same file:
ours (`moshi_mlx.load_lm` + `moshi_mlx.engine.LmGen.step`, this script's `--worker` mode, under
this interpreter) and theirs (`benchmarks/kyutai_lm.py` under Kyutai's env, moshi_mlx 0.3.0).
Both feed the same fixed pseudo-random user codes, sample with top-k (text 0.7/25, audio
0.8/250), materialize text and audio tokens every frame, and exclude warm-up frames.
Fresh processes keep peak-memory numbers separate and stop one run's caches helping the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench_lm")

HERE = Path(__file__).resolve().parent
KYUTAI_PY = os.environ.get("KYUTAI_PYTHON", "/work/kyenv/bin/python")
QUANTS = {"bf16": None, "q8": (8, 64), "q4": (4, 32)}
# Our activation recipes -> Kyutai's: "default" = each side's default (ours: dtype None, chosen per
# platform; theirs: bf16 as in their loaders); "float32R" = float32 + CPU-repacked quantized Linears.
KYUTAI_ACT = {"default": "bf16", "float32R": "float32", "bf16S": "bf16", "bf16": "bf16",
              "float32": "float32"}
LABELS = {"default": "default (ours: auto)", "float32R": "float32 + q8 CPU repack (proposal)",
          "bf16S": "bf16 + f32 scales (proposal)"}
FILES = {"bf16": "model.safetensors", "q8": "model.q8.safetensors", "q4": "model.q4.safetensors"}


def bench_configs() -> dict[str, dict]:
    """Kyutai lm_kwargs dicts: the small config of reference.md section 11 and reduced 7B shapes."""
    from moshi_mlx.config import LmConfig

    base = LmConfig()  # moshiko/moshika v0.1 field values
    small = dataclasses.replace(
        base,
        dim=512,
        num_heads=8,
        num_layers=6,
        depformer_dim=256,
        depformer_num_heads=8,
        depformer_num_layers=2,
        depformer_dim_feedforward=int(4.125 * 256),
    )
    out = {"small": small.to_dict()}
    for n in (1, 2, 4):
        out[f"7b-l{n}"] = dataclasses.replace(base, num_layers=n).to_dict()
    return out


# Random weights ----------------------------------------------------------------------------------
def kyutai_mlx_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of a bf16 Kyutai MLX checkpoint (reference.md 4.1) with its shape."""
    dim, ddim = cfg["dim"], cfg["depformer_dim"]
    hidden = 2 * int(cfg["hidden_scale"] * dim) // 3
    dff = cfg["depformer_dim_feedforward"] or int(cfg["hidden_scale"] * ddim)
    dhidden = 2 * dff // 3
    text_card, card = cfg["text_card"], cfg["card"]
    shapes: dict[str, tuple[int, ...]] = {
        "text_emb.weight": (text_card + 1, dim),
        "out_norm.weight": (dim,),
        "text_linear.weight": (text_card, dim),
    }
    for i in range(cfg["n_q"]):
        shapes[f"audio_embs.{i}.weight"] = (card + 1, dim)

    def layer(prefix: str, d: int, h: int) -> None:
        shapes[f"{prefix}.self_attn.in_proj.weight"] = (3 * d, d)
        shapes[f"{prefix}.self_attn.out_proj.weight"] = (d, d)
        shapes[f"{prefix}.norm1.weight"] = (d,)
        shapes[f"{prefix}.norm2.weight"] = (d,)
        shapes[f"{prefix}.gating.linear_in.weight"] = (2 * h, d)
        shapes[f"{prefix}.gating.linear_out.weight"] = (d, h)

    for n in range(cfg["num_layers"]):
        layer(f"transformer.layers.{n}", dim, hidden)
    for k in range(cfg["dep_q"]):
        p = f"depformer.slices.{k}"
        shapes[f"{p}.linear_in.weight"] = (ddim, dim)
        shapes[f"{p}.linear_out.weight"] = (card, ddim)
        shapes[f"{p}.emb.weight"] = ((text_card if k == 0 else card) + 1, ddim)
        for n in range(cfg["depformer_num_layers"]):
            layer(f"{p}.transformer.layers.{n}", ddim, dhidden)
    return shapes


def random_weights(cfg: dict, seed: int) -> dict:
    """bf16 mx arrays: N(0, 1) embeddings, N(0, 1/fan_in) linears, norms near 1."""
    import mlx.core as mx

    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in kyutai_mlx_shapes(cfg).items():
        if len(shape) == 1:
            w = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif "emb" in name.split(".")[-2] or name.startswith(("text_emb", "audio_embs")):
            w = rng.standard_normal(shape, dtype=np.float32)
        else:
            w = rng.standard_normal(shape, dtype=np.float32) * np.float32(shape[1] ** -0.5)
        out[name] = mx.array(w).astype(mx.bfloat16)
        mx.eval(out[name])
    return out


def quantize_weights(weights: dict, bits: int, group_size: int) -> dict:
    """Kyutai's layout: every 2-D weight (Linear, Embedding) -> uint32 weight + scales + biases."""
    import mlx.core as mx

    out = {}
    for name, w in weights.items():
        if w.ndim == 2:
            q, scales, biases = mx.quantize(w, group_size=group_size, bits=bits)
            base = name[: -len(".weight")]
            out[name], out[f"{base}.scales"], out[f"{base}.biases"] = q, scales, biases
            mx.eval(q, scales, biases)
        else:
            out[name] = w
    return out


def prepare(name: str, cfg: dict, work: Path, quants: list[str], seed: int) -> Path:
    """Write config.json and the weight files of `name` under work/name (reused if present)."""
    import mlx.core as mx

    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    cfg_path = d / "config.json"
    stamp = json.dumps({"cfg": cfg, "seed": seed}, sort_keys=True)
    fresh = not (d / "stamp.json").exists() or (d / "stamp.json").read_text() != stamp
    if not fresh and all((d / FILES[q]).exists() for q in quants):
        log.info("reusing weights in %s", d)
        return d
    for q in FILES.values():
        (d / q).unlink(missing_ok=True)
    t0 = time.perf_counter()
    weights = random_weights(cfg, seed)
    mx.save_safetensors(str(d / FILES["bf16"]), weights)
    for q in quants:
        if QUANTS[q] is not None:
            bits, group = QUANTS[q]
            mx.save_safetensors(str(d / FILES[q]), quantize_weights(weights, bits, group))
    cfg_path.write_text(json.dumps(cfg, indent=1))
    (d / "stamp.json").write_text(stamp)
    n_params = sum(w.size for w in weights.values())
    log.info("%s: %.1f M params written in %.0f s", name, n_params / 1e6, time.perf_counter() - t0)
    return d


# Our side (runs in a fresh subprocess) -----------------------------------------------------------
def user_codes(n: int, n_user: int, card: int, seed: int) -> np.ndarray:
    """Fixed pseudo-random user codes [n, n_user]; kyutai_lm.py draws the same ones."""
    return np.random.default_rng(seed).integers(0, card, size=(n, n_user), dtype=np.int64)


# Proposal prototype (not the package): CPU-repacked quantized Linears ---------------------------
def repack_quantized_for_cpu(model: Any, bits: int = 8, group_size: int = 64) -> int:
    """Swap each QuantizedLinear for one holding W.T [in, out] re-quantized along `out` (8 bits,
    group 64), run by `quantized_matmul(transpose=False)`, 3-4x faster on MLX's CPU backend. The
    8-bit re-quantization of a 4-bit checkpoint adds ~1/16 of its error (see results/lm.md)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten

    class CpuQuantizedLinear(nn.Module):
        def __init__(self, q: nn.QuantizedLinear):
            super().__init__()
            w = mx.dequantize(q.weight, q.scales, q.biases, group_size=q.group_size, bits=q.bits)
            self.weight_t, self.scales_t, self.biases_t = mx.quantize(
                mx.contiguous(w.T), group_size=group_size, bits=bits)

        def __call__(self, x: mx.array) -> mx.array:
            return mx.quantized_matmul(x, self.weight_t, self.scales_t, self.biases_t,
                                       transpose=False, group_size=group_size, bits=bits)

    swaps = [(p, CpuQuantizedLinear(m)) for p, m in model.named_modules()
             if isinstance(m, nn.QuantizedLinear) and m.weight.shape[0] % group_size == 0]
    model.update_modules(tree_unflatten(swaps))
    mx.eval(model.parameters())
    return len(swaps)


def float32_scales(model: Any) -> int:
    """Keep packed weights but give each QuantizedLinear float32 scales/biases and cast its output
    back to the input dtype: with bf16 activations MLX's CPU kernel then takes its float32 path
    (~6x faster than bf16 x bf16 scales) and the residual stream stays bf16."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten

    class F32ScalesLinear(nn.Module):
        def __init__(self, q: nn.QuantizedLinear):
            super().__init__()
            self.weight = q.weight
            self.scales, self.biases = q.scales.astype(mx.float32), q.biases.astype(mx.float32)
            self.group_size, self.bits = q.group_size, q.bits

        def __call__(self, x: mx.array) -> mx.array:
            y = mx.quantized_matmul(x, self.weight, self.scales, self.biases, transpose=True,
                                    group_size=self.group_size, bits=self.bits)
            return y.astype(x.dtype)

    swaps = [(p, F32ScalesLinear(m)) for p, m in model.named_modules()
             if isinstance(m, nn.QuantizedLinear)]
    model.update_modules(tree_unflatten(swaps))
    mx.eval(model.parameters())
    return len(swaps)


def worker(args: argparse.Namespace) -> int:
    """Time our LmGen.step; print one JSON line like kyutai_lm.py (same --lockstep protocol)."""
    import mlx.core as mx

    from moshi_mlx import load_lm
    from moshi_mlx.engine import LmGen
    from moshi_mlx.sampling import Sampler

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
        ts, aus = Sampler(0.7, top_k=25), Sampler(0.8, top_k=250)
    gen = LmGen(lm, text_sampler=ts, audio_sampler=aus, batch_size=1, seed=args.seed)
    if args.prefill:  # deep-context timing: the next steps attend over `prefill` positions
        dt = mx.bfloat16 if args.act.startswith("bf16") else mx.float32
        xs = (mx.random.normal((1, args.prefill, cfg["dim"])) * 0.1).astype(dt)
        mx.eval(lm.temporal(xs, gen.cache))
    n_total = args.warmup + args.frames
    codes = user_codes(n_total, cfg["n_q"] - cfg["dep_q"], cfg["card"], args.seed)
    times, cpu, texts, audio_frames = [], [], [], 0
    mx.reset_peak_memory()
    if args.lockstep:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
    for i in range(n_total):
        if args.lockstep:
            sys.stdin.readline()
        user = mx.array(codes[i][None, :], dtype=mx.int32)
        t0, c0 = time.perf_counter(), time.process_time()
        out = gen.step(user)
        if out.audio is not None:
            mx.eval(out.text, out.audio)
            audio_frames += int(i >= args.warmup)
        else:
            mx.eval(out.text)
        tok = int(np.asarray(out.text).reshape(-1)[0])
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        texts.append(tok)
        if i >= args.warmup:
            times.append(dt * 1000.0)
            cpu.append(dc * 1000.0)
        if args.lockstep:
            sys.stdout.write(f"FRAME {dt * 1000.0:.3f}\n")
            sys.stdout.flush()
    ms = np.asarray(times)
    res = {
        "impl": "ours",
        "quant": args.quant,
        "act": args.act,
        "act_dtype": str(getattr(lm, "act_dtype", None)),
        "repacked_linears": swapped,
        "frames": args.frames,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "cpu_p50_ms": float(np.percentile(cpu, 50)),
        "cpu_p95_ms": float(np.percentile(cpu, 95)),
        "peak_mem_mb": mx.get_peak_memory() / 2**20,
        "rss_max_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_s": load_s,
        "audio_frames": audio_frames,
        "text_tokens": texts,
        "mlx": importlib.metadata.version("mlx"),
        "moshi_mlx": importlib.metadata.version("moshi_mlx"),
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
    return [KYUTAI_PY, str(HERE / "kyutai_lm.py"), "--act", kact, *common]


def _failed(impl: str, text: str, rc: int | None) -> dict:
    tail = text.strip().splitlines()[-6:]
    log.warning("%s failed (rc %s): %s", impl, rc, " | ".join(tail))
    return {"impl": impl, "error": tail[-1] if tail else f"rc {rc}"}


def run_one(impl: str, d: Path, quant: str, act: str, frames: int,
            args: argparse.Namespace) -> dict:
    """Sequential mode: one fresh subprocess, alone on the machine."""
    cmd = _cmd(impl, d, quant, act, frames, args)
    # Run from /tmp so neither interpreter picks up a package from the current directory.
    p = subprocess.run(cmd, capture_output=True, text=True, cwd="/tmp", timeout=args.timeout)
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
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errs[impl])
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
    ap.add_argument("--acts", default="bf16,float32,default,float32R,bf16S",
                    help="bf16, float32, default (each side's default dtype), float32R (float32 + "
                         "quantized Linears repacked for the CPU kernel), bf16S (bf16 with float32 "
                         "quantization scales); the last two are proposals, not the package")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--frames-7b", type=int, default=6, help="timed frames for the 7b-* configs")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="runs per row and impl; best p50 kept")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--prefill", type=int, default=0,
                    help="time frames after this many context positions (temporal KV caches filled "
                         "with random inputs first)")
    ap.add_argument("--impls", default="ours,kyutai")
    ap.add_argument("--mode", choices=("lockstep", "sequential"), default="lockstep")
    ap.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--work", default="/tmp/moshi_bench_lm")
    ap.add_argument("--out", default=None, help="markdown file for the table (also writes .json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.worker:
        return worker(args)

    cfgs = bench_configs()
    quants = args.quants.split(",")
    impls = args.impls.split(",")
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
                f"{args.repeats} run(s); versions (mlx, moshi_mlx): {versions}")
        Path(args.out).write_text(table + "\n\n" + meta + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
