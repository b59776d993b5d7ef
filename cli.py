"""moshi_mlx command line: talk to Moshi live, run it on files, benchmark it, quantize it.

    python cli.py chat [--duration S] [--transcript t.json] [--record r.wav]  # live, sound card
    python cli.py run --input in.wav --output out.wav [--transcript t.json]  # file to file
    python cli.py bench [--frames N] [--schedule serial|pipelined]           # speed on this machine
    python cli.py speak "Some text." --model-dir DIR [--output out.wav]      # text to speech
    python cli.py transcribe --input in.wav --output out.json [--model stt-1b]  # speech to text
    python cli.py quantize SRC OUT_DIR --recipe NAME                         # see quantize/
    python cli.py quantize-report OUT_DIR --reference SRC

Model selection (every model command): default `kyutai/moshiko-mlx-q4`; `--model moshika --quant q8`
(or `--model moshika-q8`), `--hf-repo REPO`, `--model-dir DIR`, single files with `--lm-weight`,
`--mimi-weight`, `--tokenizer`. This file only parses arguments and wires modules (imported lazily);
user mistakes end with one line on stderr and exit status 1 (2 for usage errors), no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130
MAX_ERROR_LINES = 8


def _add_model_args(p: argparse.ArgumentParser, default: str = "kyutai/moshiko-mlx-q4",
                    model_help: str = "moshiko or moshika, optionally -bf16/-q8/-q4",
                    quant_help: str = "precision for --model (q4)",
                    layout: str = "Kyutai's MLX layout") -> argparse._ArgumentGroup:
    """The model-selection flags shared by every model command; returns the group."""
    g = p.add_argument_group(f"model (default: {default})")
    g.add_argument("--model", metavar="NAME", help=model_help)
    g.add_argument("--quant", choices=["bf16", "q8", "q4"], help=quant_help)
    g.add_argument("--hf-repo", metavar="REPO", help=f"Hugging Face repo in {layout}")
    g.add_argument("--model-dir", metavar="DIR", help="local directory in the same layout")
    g.add_argument("--lm-weight", metavar="FILE", help="LM checkpoint file (overrides the source's)")
    g.add_argument("--mimi-weight", metavar="FILE", help="Mimi checkpoint file")
    g.add_argument("--tokenizer", metavar="FILE", help="sentencepiece text tokenizer (.model)")
    g.add_argument("--mimi-backend", choices=["mlx", "rustymimi"], default="mlx",
                   help="Mimi implementation: ours in MLX (default) or Kyutai's Rust rustymimi")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="LM compute dtype; auto = stored bf16 on a Mac, float32 elsewhere")
    return g


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--text-temp", type=float, default=0.7, help="text temperature (0 = greedy)")
    g.add_argument("--text-top-k", type=int, default=25, help="text top-k (0 = off)")
    g.add_argument("--audio-temp", type=float, default=0.8, help="audio temperature (0 = greedy)")
    g.add_argument("--audio-top-k", type=int, default=250, help="audio top-k (0 = off)")
    g.add_argument("--seed", type=int, default=299792458, help="random seed (reproducible runs)")


def _add_schedule_arg(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument("--schedule", choices=["auto", "serial", "pipelined"], default="auto",
                   help="serial: encode, LM, decode one after another (lowest latency); "
                        "pipelined: Mimi decodes the previous frame while the LM runs (+80 ms "
                        f"latency, more headroom); {default_help}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cli.py", description="Talk with Moshi, in MLX.")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("chat", help="live full-duplex conversation through the sound card")
    c.add_argument("--list-devices", action="store_true", help="list sound devices and exit")
    c.add_argument("--input-device", metavar="ID|NAME", help="microphone (index or name)")
    c.add_argument("--output-device", metavar="ID|NAME", help="speaker/headphones (index or name)")
    c.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    c.add_argument("--transcript", type=Path, metavar="FILE.json", help="save text, settings, stats")
    c.add_argument("--record", type=Path, metavar="FILE.wav", help="save user+Moshi, 2 channels")
    c.add_argument("--plain", action="store_true", help="plain text output even on a terminal")
    c.add_argument("--jitter-frames", type=int, default=1,
                   help="smallest output buffer in 80 ms frames (it grows when the sound card "
                        "consumes in bursts)")
    _add_schedule_arg(c, "auto (default) picks from the warm-up stage times")
    c.add_argument("--echo", choices=["auto", "on", "off"], default="auto",
                   help="echo cancellation, so Moshi does not hear itself through speakers: auto "
                        "(default: on, or a warning if its library is missing), on, off "
                        "(headphones)")
    _add_model_args(c)
    _add_sampling_args(c)

    r = sub.add_parser("run", help="file to file: Moshi answers a recorded user")
    r.add_argument("--input", "-i", type=Path, required=True, help="user audio (wav, any rate)")
    r.add_argument("--output", "-o", type=Path, required=True, help="Moshi's audio (24 kHz wav)")
    r.add_argument("--transcript", type=Path, metavar="FILE.json",
                   help="save text pieces with frame times, settings, stats")
    r.add_argument("--pad-seconds", type=float, default=4.0,
                   help="silence appended so Moshi can answer (default 4)")
    _add_schedule_arg(r, "same output either way; auto = serial")
    _add_model_args(r)
    _add_sampling_args(r)

    b = sub.add_parser("bench", help="frames/s, frame time p50/p95, peak memory")
    b.add_argument("--frames", type=int, default=100,
                   help="frames to time after warm-up (default 100 = 8 s of audio)")
    b.add_argument("--json", type=Path, metavar="FILE", help="also save the numbers as JSON")
    _add_schedule_arg(b, "auto (default) picks from the warm-up stage times, as chat does")
    _add_model_args(b)
    _add_sampling_args(b)

    _add_speak_parser(sub)
    _add_transcribe_parser(sub)

    sub.add_parser("quantize", help="convert a checkpoint (see quantize-report)", add_help=False)
    sub.add_parser("quantize-report", help="quality report of quantized checkpoints",
                   add_help=False)
    return p


def _add_speak_parser(sub) -> None:
    s = sub.add_parser("speak", help="text to speech with a Kyutai TTS model (kyutai/tts-*)")
    s.add_argument("text", nargs="?", help="the text; - reads standard input as it arrives")
    s.add_argument("--text-file", type=Path, metavar="FILE", help="read the text from a file")
    s.add_argument("--model-dir", type=Path, required=True, metavar="DIR",
                   help="TTS repository directory (config.json, dsm_tts_*.safetensors, Mimi, "
                        "tokenizer), e.g. from `tiny_repo --kind tts`")
    s.add_argument("--voice", metavar="NAME|FILE", help="voice: a .safetensors file, a name in "
                   "DIR/voices (default: the only voice there) or in the Hugging Face repo "
                   "kyutai/tts-voices, e.g. expresso/ex03-ex01_happy_001_channel1_334s.wav")
    s.add_argument("--output", "-o", type=Path, metavar="FILE.wav",
                   help="24 kHz wav to write (default: play through the speakers as it is made)")
    s.add_argument("--output-device", metavar="ID|NAME",
                   help="without --output: speaker/headphones (index or name; see chat "
                        "--list-devices)")
    s.add_argument("--cfg", type=float, default=2.0, help="guidance strength (1.0 to 4.0 by 0.5)")
    s.add_argument("--temp", type=float, default=0.6, help="text and audio temperature (0 = greedy)")
    s.add_argument("--seed", type=int, default=299792458, help="random seed (reproducible runs)")
    s.add_argument("--max-seconds", type=float, default=600.0, help="stop after this much audio")
    s.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="LM compute dtype")
    s.add_argument("--quant", choices=["bf16", "q8", "q4"], default=None,
                   help="quantize the LM at load: q8 (8 bits, group 64) or q4 (4 bits, group 32); "
                        "bf16 or unset: as stored (a `quantize` output is already quantized)")


def cmd_speak(a: argparse.Namespace) -> int:
    from moshi_mlx.tts.cli import run_speak

    return run_speak(a)


def _add_transcribe_parser(sub) -> None:
    t = sub.add_parser("transcribe", help="speech to text (Kyutai STT), from files or the microphone")
    t.add_argument("--input", "-i", type=Path, action="append", metavar="FILE",
                   help="wav file (any rate, mono or stereo); repeat for several; none = microphone")
    t.add_argument("--output", "-o", type=Path, metavar="FILE", help="transcript .txt, .json or .srt")
    t.add_argument("--output-dir", type=Path, metavar="DIR",
                   help="with several inputs: one transcript per input, named after it")
    t.add_argument("--format", choices=["json", "txt", "srt"], default="json",
                   help="format of the --output-dir files (default json)")
    t.add_argument("--batch-size", type=int, default=4, help="files transcribed together (4)")
    t.add_argument("--list-devices", action="store_true", help="list sound devices and exit")
    t.add_argument("--input-device", metavar="ID|NAME", help="microphone (index or name)")
    t.add_argument("--duration", type=float, metavar="SECONDS", help="live: stop after this long")
    t.add_argument("--record", type=Path, metavar="FILE.wav", help="live: save what was heard")
    t.add_argument("--plain", action="store_true", help="plain text output even on a terminal")
    g = _add_model_args(t, default="kyutai/stt-1b-en_fr-candle",
                        model_help="stt-1b (English/French, VAD) or stt-2.6b",
                        quant_help="quantize at load (default: as stored)",
                        layout="Kyutai's STT layout")
    g.add_argument("--temp", type=float, default=0.0, help="text temperature (0 = greedy, default)")
    g.add_argument("--seed", type=int, default=299792458, help="random seed (with --temp > 0)")


def cmd_transcribe(a: argparse.Namespace) -> int:
    from moshi_mlx.stt.cli_run import transcribe

    return transcribe(a)


def _files(a: argparse.Namespace):
    from moshi_mlx.hub import resolve

    return resolve(hf_repo=a.hf_repo, model=a.model, quant=a.quant, model_dir=a.model_dir,
                   lm_weight=a.lm_weight, mimi_weight=a.mimi_weight, tokenizer=a.tokenizer)


def _settings(a: argparse.Namespace):
    from moshi_mlx.audio.pipeline import Settings

    for name in ("text_temp", "audio_temp"):
        if getattr(a, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("text_top_k", "audio_top_k"):
        if getattr(a, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (0 = off)")
    if not 0 <= a.seed < 2**64:
        raise ValueError("--seed must be in [0, 2**64)")
    return Settings(a.text_temp, a.text_top_k, a.audio_temp, a.audio_top_k, a.seed, a.dtype,
                    a.mimi_backend, a.schedule)


def _check_writable(**paths: Path | None) -> None:
    """Fail before a long session, not after it, when an output cannot be written."""
    for flag, p in paths.items():
        if p is not None and p.is_dir():
            raise IsADirectoryError(f"--{flag} {p}: is a directory; give a file name")
        if p is not None and not p.resolve().parent.is_dir():
            raise FileNotFoundError(f"--{flag} {p}: directory {p.parent} does not exist")


def cmd_chat(a: argparse.Namespace) -> int:
    from rich.console import Console

    from moshi_mlx.audio.chat import ChatOptions, run_chat
    from moshi_mlx.audio.live import list_devices
    from moshi_mlx.ui.terminal import make_ui

    if a.list_devices:
        print(list_devices())
        return 0
    if a.duration is not None and a.duration <= 0:
        raise ValueError("--duration must be > 0")
    if a.jitter_frames < 1:
        raise ValueError("--jitter-frames must be >= 1")
    _check_writable(transcript=a.transcript, record=a.record)
    files = _files(a)
    opts = ChatOptions(a.input_device, a.output_device, a.duration, a.transcript, a.record,
                       jitter_frames=a.jitter_frames, echo=a.echo)
    run_chat(files, _settings(a), opts, make_ui(Console(), plain=True if a.plain else None))
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from moshi_mlx.audio.filemode import run_file

    if not a.input.is_file():
        raise FileNotFoundError(f"--input {a.input}: no such file")
    if a.pad_seconds < 0:
        raise ValueError("--pad-seconds must be >= 0")
    _check_writable(output=a.output, transcript=a.transcript)
    data = run_file(_files(a), _settings(a), a.input, a.output, a.transcript, a.pad_seconds)
    st = data["stats"]
    print(f"wrote {a.output}: {st['frames']} frames ({st['duration_s']:.1f} s) in "
          f"{st['wall_s']:.1f} s; p50 {st['frame_ms_p50']:.1f} ms/frame")
    if data["text"]:
        print(f"moshi: {data['text']}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    import json

    from moshi_mlx.audio.filemode import bench, format_bench

    if a.frames < 1:
        raise ValueError("--frames must be >= 1")
    _check_writable(json=a.json)
    result = bench(_files(a), _settings(a), frames=a.frames)
    print(format_bench(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is shown as one line (imported only when needed)."""
    from moshi_mlx.audio.live import AudioDeviceError
    from moshi_mlx.hub import HubError

    return (HubError, AudioDeviceError, ValueError, RuntimeError, OSError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Importing moshi_mlx before anything imports MLX lets it load a system OpenBLAS on Linux
    # (moshi_mlx.compute.prefer_system_blas; MLX's CPU wheel ships the reference BLAS).
    import moshi_mlx  # noqa: F401
    # quantize / quantize-report take their own argparse (owned by quantize/).
    debug = "--debug" in argv[:1]
    rest = argv[1:] if debug else argv
    if rest and rest[0] in ("quantize", "quantize-report"):
        from quantize.cli import main_quantize, main_report

        fn = main_quantize if rest[0] == "quantize" else main_report
        return _guarded(lambda: fn(rest[1:]), debug)
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # huggingface_hub prints its own warnings (download retries): don't print each one twice.
    logging.getLogger("huggingface_hub").propagate = a.debug
    cmds = {"chat": cmd_chat, "run": cmd_run, "bench": cmd_bench, "speak": cmd_speak,
            "transcribe": cmd_transcribe}
    return _guarded(lambda: cmds[a.command](a), a.debug)


def _guarded(fn, debug: bool) -> int:
    if debug or os.environ.get("MOSHI_MLX_DEBUG"):
        return fn()
    try:
        return fn()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_errors() as e:
        lines = (str(e).strip() or e.__class__.__name__).splitlines()
        if len(lines) > MAX_ERROR_LINES:  # e.g. a strict-load listing: the head is enough
            lines = lines[:MAX_ERROR_LINES] + [f"  ... ({len(lines) - MAX_ERROR_LINES} more lines; "
                                               "--debug shows everything)"]
        print("error: " + "\n".join(lines), file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
