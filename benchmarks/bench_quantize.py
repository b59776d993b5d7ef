"""Peak memory of `cli.py quantize` on a full-size (7B-shaped) random bf16 checkpoint.

    python benchmarks/bench_quantize.py [--layers 32] [--recipes q4,q8,mixed-q4q8] [--workdir DIR]
                                        [--format mlx|pytorch]
                                        [--kyutai-check] [--keep] [--json FILE]

1. Writes a random Moshi v0.1-shaped LM (`moshi_v0_1()`, optionally fewer temporal layers) in
   Kyutai's MLX bf16 layout (or, with `--format pytorch`, their PyTorch release names and shapes) (`model.safetensors` + `config.json`, ~15.4 GB at 32 layers) with our
   streaming writer, one tensor at a time. Values are slices of a 64 Mi-value normal pool (cheap to
   make; quantization cost and memory do not depend on the values).
2. Converts it once per recipe in a fresh subprocess (`main_quantize([... "-q", "--no-report"])`),
   which reports its own peak RSS (`VmHWM` in /proc: MLX buffers, Python and mapped pages included).
3. Prints peak RSS, the largest output file (shard), their ratio (target < 1.3), wall time, and, with
   `--kyutai-check`, loads the q4/q8 outputs in Kyutai's moshi_mlx (`$KYUTAI_PYTHON`, `docs/environments.md`) strictly.
4. Deletes everything it wrote unless `--keep`.

A benchmark, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from moshi_mlx.checkpoint.safetensors_io import stream_save  # noqa: E402
from moshi_mlx.config import moshi_v0_1  # noqa: E402
from moshi_mlx.models.lm import Lm  # noqa: E402

KYUTAI_PYTHON = os.environ.get("KYUTAI_PYTHON")  # Kyutai's moshi_mlx env, docs/environments.md
POOL = 1 << 26  # 64 Mi bf16 values = 128 MB


def torch_shapes(shapes: dict[str, tuple[int, ...]], dep_q: int) -> dict[str, tuple[int, ...]]:
    """Our (Kyutai MLX) names/shapes -> PyTorch release names/shapes (the inverse of `moshi_mlx.weights.lm.map_lm_torch`)."""
    out: dict[str, tuple[int, ...]] = {}
    for k, s in shapes.items():
        m = re.match(r"depformer\.slices\.(\d+)\.(.*)$", k)
        if m is None:
            k = re.sub(r"^audio_embs\.", "emb.", k).replace("in_proj.weight", "in_proj_weight")
            if re.search(r"norm\d?\.weight$", k):
                k, s = k[: -len("weight")] + "alpha", (1, 1, *s)
            out[k] = s
            continue
        slot, rest = int(m.group(1)), m.group(2)
        if rest == "linear_in.weight":
            out[f"depformer_in.{slot}.weight"] = s
        elif rest == "linear_out.weight":
            out[f"linears.{slot}.weight"] = s
        elif rest == "emb.weight":
            out["depformer_text_emb.weight" if slot == 0 else f"depformer_emb.{slot - 1}.weight"] = s
        else:
            rest = rest.replace("transformer.layers.", "depformer.layers.")
            if "gating." in rest:
                out[rest.replace("gating.", f"gating.{slot}.")] = s
            elif "self_attn" in rest:  # weight sets concatenated along dim 0
                out[rest.replace("in_proj.weight", "in_proj_weight")] = (s[0] * dep_q, *s[1:])
            else:  # shared norms
                out[rest[: -len("weight")] + "alpha"] = (1, 1, *s)
    return out


def make_checkpoint(out: Path, layers: int, fmt: str) -> tuple[Path, int, float]:
    """Random bf16 LM in Kyutai's MLX or PyTorch names; returns (dir, bytes, seconds)."""
    t0 = time.perf_counter()
    cfg = dataclasses.replace(moshi_v0_1(), num_layers=layers)
    shapes = {k: v.shape for k, v in tree_flatten(Lm(cfg).parameters())}  # lazy, never evaluated
    if fmt == "pytorch":
        shapes = torch_shapes(shapes, cfg.dep_q)
    mx.random.seed(0)
    pool = (mx.random.normal((POOL,)) * 0.02).astype(mx.bfloat16)
    mx.eval(pool)

    def fake(name: str, shape: tuple[int, ...]) -> mx.array:
        n = 1
        for s in shape:
            n *= s
        if len(shape) == 1 or name.endswith("alpha"):  # norms: ones, like a fresh RMSNorm
            return mx.ones(shape, dtype=mx.bfloat16)
        off = zlib.crc32(name.encode()) % POOL
        reps = (off + n) // POOL + 1
        flat = mx.tile(pool, (reps,)) if reps > 1 else pool
        return flat[off: off + n].reshape(shape)

    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: fake(k, s) for k, s in sorted(shapes.items())}
    size = stream_save(out / "model.safetensors", tensors, metadata={"format": "mlx"})
    d = cfg.to_dict()
    d["moshi_name"] = "model.safetensors"
    (out / "config.json").write_text(json.dumps(d, indent=2))
    return out, size, time.perf_counter() - t0


# The child reports its own VmHWM (peak RSS of its address space) from /proc at exit. `ru_maxrss`
# from wait4 would not do: Linux carries the parent's RSS at fork into the child's maximum.
_CHILD = """
import sys
rc = 0
if sys.argv[1:]:
    from quantize.cli import main_quantize
    rc = main_quantize(sys.argv[1:])
else:
    import mlx.core, numpy, rich, moshi_mlx.models.lm, quantize.convert  # imports only
for line in open("/proc/self/status"):
    if line.startswith("VmHWM"):
        print("VMHWM", int(line.split()[1]) * 1024)
sys.exit(rc)
"""


def run_measured(args: list[str]) -> tuple[int, float, float]:
    """(exit code, peak RSS in bytes, seconds) of `cli.py quantize ARGS` in a fresh process."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=ROOT, capture_output=True,
                         text=True)
    peak = [float(x.split()[1]) for x in res.stdout.splitlines() if x.startswith("VMHWM")]
    if res.returncode != 0:
        print(res.stderr[-2000:])
    return res.returncode, peak[-1] if peak else float("nan"), time.perf_counter() - t0


def idle_rss() -> float:
    """Peak RSS of a process that only imports what the converter imports."""
    return run_measured([])[1]


def kyutai_check(out_dir: Path) -> dict:
    if not KYUTAI_PYTHON:
        return {"loaded": None, "why": "KYUTAI_PYTHON not set"}
    res = subprocess.run([KYUTAI_PYTHON, str(ROOT / "quantize" / "kyutai_check.py"), str(out_dir)],
                         capture_output=True, text=True, cwd="/tmp")
    if res.returncode != 0:
        return {"loaded": False, "why": res.stderr.strip().splitlines()[-1:]}
    info = json.loads(res.stdout.strip().splitlines()[-1])
    logits = info.pop("text_logits_step0")
    info["finite_logits"] = all(abs(x) < 1e30 for x in logits)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32, help="temporal layers (real model: 32)")
    ap.add_argument("--recipes", default="q4,q8,mixed-q4q8")
    ap.add_argument("--format", choices=("mlx", "pytorch"), default="mlx",
                    help="source layout: Kyutai MLX bf16 names, or their PyTorch release names")
    ap.add_argument("--workdir", default=str(ROOT.parent / "bench_quantize_tmp"))
    ap.add_argument("--kyutai-check", action="store_true", help="load q4/q8 outputs in $KYUTAI_PYTHON's moshi_mlx")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint and outputs")
    ap.add_argument("--json", default=None, help="also save the results here")
    args = ap.parse_args(argv)

    work = Path(args.workdir)
    need = 2.6 * 15.4e9 * args.layers / 32 + 1e9
    free = shutil.disk_usage(work.parent if not work.exists() else work).free
    if free < need:
        print(f"not enough disk: {free / 1e9:.1f} GB free, {need / 1e9:.1f} GB needed")
        return 1
    rows, results = [], {}
    try:
        src, src_bytes, gen_s = make_checkpoint(work / "src", args.layers, args.format)
        print(f"random checkpoint: {src_bytes / 1e9:.2f} GB in {gen_s:.0f} s ({args.layers} layers)")
        base = idle_rss()
        for recipe in args.recipes.split(","):
            out = work / recipe
            rc, peak, secs = run_measured([str(src), str(out), "--recipe", recipe, "-q",
                                           "--no-report"])
            files = sorted(out.glob("model*.safetensors"))
            largest = max((f.stat().st_size for f in files), default=0)
            total = sum(f.stat().st_size for f in files)
            row = {"recipe": recipe, "rc": rc, "peak_rss_gb": peak / 1e9,
                   "largest_shard_gb": largest / 1e9, "total_gb": total / 1e9,
                   "ratio": peak / largest if largest else None, "seconds": secs,
                   "files": [f.name for f in files]}
            if args.kyutai_check and recipe in ("q4", "q8"):
                row["kyutai"] = kyutai_check(out)
            rows.append(row)
            print(json.dumps(row))
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
        results = {"layers": args.layers, "format": args.format, "source_gb": src_bytes / 1e9, "generate_s": gen_s,
                   "idle_rss_gb": base / 1e9, "rows": rows, "mlx": mx.__version__,
                   "machine": f"{platform.machine()} {os.cpu_count()} cores"}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nsource {results.get('source_gb', 0):.2f} GB bf16 ({args.format} names), "
          f"{args.layers} temporal layers; "
          f"idle RSS (imports only) {results.get('idle_rss_gb', 0):.2f} GB; mlx {mx.__version__}")
    print("| recipe | output files | largest file | peak RSS | peak / largest | time |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['recipe']} | {len(r['files'])} | {r['largest_shard_gb']:.2f} GB | "
              f"{r['peak_rss_gb']:.2f} GB | {r['ratio']:.2f}x | {r['seconds']:.0f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
