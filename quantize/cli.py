"""Command line of `cli.py quantize` and `cli.py quantize-report` (argparse inside each entry point).

    python cli.py quantize SRC OUT_DIR --recipe {bf16,q8,q4,mixed-q4q8,q4-heads8,custom}
                           [--bits B] [--group-size G] [--scales DTYPE] [--config JSON]
                           [--max-shard-gb N]
                           [--no-report] [--report-steps T] [--json FILE]
    python cli.py quantize-report OUT_DIR --reference SRC [--compare DIR ...] [--json FILE]

SRC: a Hugging Face repo id, a model directory or a weight file, in Kyutai's PyTorch or MLX format;
a TTS repository (Kyutai's layout, e.g. kyutai/tts-1.6b-en_fr) gives a TTS repository that
`cli.py speak --model-dir OUT_DIR` loads (see quantize/convert.py).
Both return a process exit code: 0 ok, 2 bad input (one clear line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .recipes import RECIPES, get_recipe

log = logging.getLogger(__name__)
REPORT_NAME = "quantize_report.json"


def _recipes_help() -> str:
    return "; ".join(f"{r.name}: {r.description}" for r in RECIPES.values())


def quantize_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="cli.py quantize",
        description="Convert a Moshi LM checkpoint (or a Kyutai TTS repository) to bf16 / quantized "
                    "MLX weights, tensor by tensor.",
    )
    ap.add_argument("src", help="Hugging Face repo id, model directory, or .safetensors file")
    ap.add_argument("out_dir", help="output model directory (usable with --model-dir)")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                    help=f"default q4 (custom with --bits). {_recipes_help()}")
    ap.add_argument("--bits", type=int, default=None, help="override the recipe's default bits")
    ap.add_argument("--group-size", type=int, default=None,
                    help="override the recipe's default group size (32, 64, 128)")
    ap.add_argument("--scales", choices=("bfloat16", "float16", "float32"), default=None,
                    help="dtype of quantization scales and biases (default: --dtype, bfloat16 as "
                         "Kyutai's files); float16 is the same size and brings 8-bit weights "
                         "closer to the source")
    ap.add_argument("--config", default=None, help="LM config.json to use instead of the source's")
    ap.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16",
                    help="dtype of unquantized tensors (and of scales/biases unless --scales)")
    ap.add_argument("--max-shard-gb", type=float, default=None,
                    help="shard size; default: one file for bf16/q8/q4 (Kyutai's names), 5 GB else")
    ap.add_argument("--no-report", action="store_true", help="skip the quality report")
    ap.add_argument("--report-steps", type=int, default=64, help="probe length of the report")
    ap.add_argument("--json", default=None, help=f"report JSON (default OUT_DIR/{REPORT_NAME})")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return ap


def report_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="cli.py quantize-report",
        description="Size, bits per weight and logit drift (KL, top-1) of converted models.",
    )
    ap.add_argument("out_dir", help="converted model directory to report on")
    ap.add_argument("--reference", required=True, help="the source model (repo, dir or file)")
    ap.add_argument("--reference-config", default=None,
                    help="config.json of the reference (default: its own, else OUT_DIR's)")
    ap.add_argument("--compare", nargs="+", default=[], metavar="DIR",
                    help="more converted directories, shown side by side")
    ap.add_argument("--steps", type=int, default=64, help="probe sequence length (frames)")
    ap.add_argument("--seed", type=int, default=0, help="probe sequence seed")
    ap.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "stored"), default="auto",
                    help="compute dtype (auto: float32 below 1B weights, else as stored)")
    ap.add_argument("--json", default=None, help=f"report JSON (default OUT_DIR/{REPORT_NAME})")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    return ap


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def _console():
    from rich.console import Console

    console = Console()
    # Not a terminal (logs, CI, pipes): no width to respect, so keep the table on one line a row.
    return console if console.is_terminal else Console(width=130)


def _run_report(models: list[str], reference: str, steps: int, seed: int, dtype: str,
                json_path: Path, markdown: bool = False, ref_config: str | None = None) -> dict:
    from .report import build_report, render
    from .report import markdown as to_md

    dt = None if dtype == "stored" else dtype
    rep = build_report(models, reference, steps=steps, seed=seed, dtype=dt,
                       reference_config=ref_config)
    console = _console()
    render(rep, console)
    if markdown:
        console.print(to_md(rep), markup=False, highlight=False)
    json_path.write_text(json.dumps(rep, indent=2))
    console.print(f"report saved to {json_path}", markup=False, highlight=False)
    return rep


def main_quantize(argv: list[str]) -> int:
    args = quantize_parser().parse_args(argv)
    from .convert import prepare, write
    from .source import SourceError, resolve

    try:
        recipe = get_recipe(args.recipe, args.bits, args.group_size, args.scales)
        source = resolve(args.src, args.config)
        plan = prepare(source, recipe, args.dtype)
    except (SourceError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shard = None if args.max_shard_gb is None else int(args.max_shard_gb * (1 << 30))
    console = _console()
    console.print(f"{source.description} ({plan.source_format}) -> {args.out_dir}: recipe "
                  f"{recipe.name} ({recipe.description})", markup=False, highlight=False)
    if any(f.resolve().parent == Path(args.out_dir).resolve() for f in source.weight_files):
        print(f"error: OUT_DIR {args.out_dir!r} holds the source weights: choose another directory",
              file=sys.stderr)
        return 2
    try:
        if args.quiet:
            result = write(plan, args.out_dir, shard)
        else:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), TimeRemainingColumn(), console=console) as bar:
                task = bar.add_task("converting", total=plan.total_bytes)
                result = write(plan, args.out_dir, shard,
                               on_tensor=lambda _name, n: bar.advance(task, n))
    except (ValueError, OSError) as e:  # e.g. disk full, unwritable OUT_DIR
        print(f"error: writing {args.out_dir}: {e}", file=sys.stderr)
        return 2
    n_q = sum(q is not None for q in result.decisions.values())
    console.print(
        f"wrote {', '.join(f.name for f in result.weight_files)} ({result.weight_bytes / 1e9:.3f} GB"
        f") in {result.seconds:.1f} s; {n_q}/{len(result.decisions)} Linear/Embedding modules "
        f"quantized; Kyutai moshi_mlx compatible: {'yes' if result.kyutai_compatible else 'no'}",
        markup=False, highlight=False)
    if args.no_report:
        return 0
    src_bytes = sum(f.stat().st_size for f in source.weight_files)
    if src_bytes > 0.7 * _physical_memory():
        console.print(f"quality report skipped: the reference ({src_bytes / 1e9:.1f} GB) does not "
                      "fit comfortably in this machine's memory; run `cli.py quantize-report "
                      f"{args.out_dir} --reference {args.src}` on a larger one", markup=False,
                      highlight=False)
        return 0
    json_path = Path(args.json) if args.json else Path(args.out_dir) / REPORT_NAME
    try:
        _run_report([args.out_dir], args.src, args.report_steps, 0, "auto", json_path,
                    ref_config=args.config)
    except (ValueError, OSError, MemoryError) as e:
        print(f"error: report failed: {e}", file=sys.stderr)
        return 2
    return 0


def main_report(argv: list[str]) -> int:
    args = report_parser().parse_args(argv)
    from .source import SourceError

    json_path = Path(args.json) if args.json else Path(args.out_dir) / REPORT_NAME
    try:
        _run_report([args.out_dir, *args.compare], args.reference, args.steps, args.seed,
                    args.dtype, json_path, args.markdown, args.reference_config)
    except (SourceError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # python -m quantize.cli {quantize,report} ...
    logging.basicConfig(level=logging.WARNING)
    cmd, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    sys.exit(main_report(rest) if cmd == "report" else main_quantize(rest if cmd == "quantize"
                                                                       else sys.argv[1:]))
