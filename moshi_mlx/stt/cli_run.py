"""Argument checks and wiring of `cli.py transcribe` (the parser lives in cli.py).

Every user mistake is found before the model loads (inputs readable, outputs writable, options
consistent) and raised as ValueError / OSError, which cli.py prints as one `error:` line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .outputs import FORMATS, check_output


def _check(a: argparse.Namespace) -> list[Path]:
    from .audio_in import wav_info

    inputs: list[Path] = list(a.input or [])
    for p in inputs:
        if not p.is_file():
            raise FileNotFoundError(f"--input {p}: no such file")
        wav_info(p)  # AudioFileError (a ValueError) names the file and the problem
    if a.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    if a.duration is not None and a.duration <= 0:
        raise ValueError("--duration must be > 0")
    if not a.temp >= 0:
        raise ValueError("--temp must be >= 0")
    if not 0 <= a.seed < 2**64:
        raise ValueError("--seed must be in [0, 2**64)")
    if a.output is not None and a.output_dir is not None:
        raise ValueError("give --output FILE or --output-dir DIR, not both")
    if a.output is not None:
        if len(inputs) > 1:
            raise ValueError(f"--output takes one input's transcript; with {len(inputs)} inputs "
                             "use --output-dir DIR")
        check_output(a.output)
    if a.output_dir is not None:
        if not a.output_dir.is_dir():
            raise FileNotFoundError(f"--output-dir {a.output_dir}: no such directory")
        if not inputs:
            raise ValueError("--output-dir is for file inputs; live mode takes --output FILE")
        stems = [p.stem for p in inputs]
        dup = sorted({s for s in stems if stems.count(s) > 1})
        if dup:
            raise ValueError(f"inputs share the name {dup[0]!r}: their transcripts would "
                             "overwrite each other in --output-dir")
    if inputs and (a.input_device is not None or a.record is not None):
        flag = "--input-device" if a.input_device is not None else "--record"
        raise ValueError(f"{flag} is for the live microphone (no --input)")
    if a.record is not None:
        if a.record.is_dir() or not a.record.resolve().parent.is_dir():
            raise FileNotFoundError(f"--record {a.record}: not a writable file path")
    return inputs


def transcribe(a: argparse.Namespace) -> int:
    from rich.console import Console

    from .app import Outputs, run_files, run_live
    from .transcriber import Transcriber

    if a.list_devices:
        from ..audio.live import list_devices

        print(list_devices())
        return 0
    inputs = _check(a)
    if not inputs:
        from .mic import Microphone

        Microphone(a.input_device).check()  # a bad device fails now, not after loading
    console = Console(force_terminal=False if a.plain else None, highlight=False)
    tr = Transcriber.load(a.model, quant=a.quant, hf_repo=a.hf_repo, model_dir=a.model_dir,
                          lm_weight=a.lm_weight, mimi_weight=a.mimi_weight, tokenizer=a.tokenizer,
                          dtype=a.dtype, mimi_backend=a.mimi_backend, temp=a.temp, seed=a.seed)
    settings = {"temp": a.temp, "seed": a.seed, "dtype": a.dtype, "quant": a.quant,
                "mimi_backend": a.mimi_backend, "batch_size": a.batch_size}
    if inputs:
        outs = Outputs(a.output, a.output_dir, a.format)
        run_files(tr, inputs, outs, a.batch_size, console, settings)
    else:
        run_live(tr, a.input_device, a.duration, a.output, console, settings, a.record)
    return 0


__all__ = ["transcribe", "FORMATS"]
