"""`cli.py transcribe`: files (one streamed to the terminal, several in batches with a progress
bar) or the live microphone, with outputs in TXT/JSON/SRT (`outputs.py`).

Text is printed as the model writes it (each visible token); with VAD heads an end of turn prints
a dim `[end of turn]` mark and starts a new line. Ctrl+C in live mode ends the session cleanly:
the trailing silence is fed so the last words come out, and `--output` is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .outputs import write_transcript
from .session import Piece
from .transcriber import Transcriber, Transcript
from .words import VadEvent

END_OF_TURN = "[end of turn]"


class TextPrinter:
    """Streams pieces of text to a rich Console (or any `print`-like with end/style)."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.column = 0

    def __call__(self, ev: Any) -> None:
        if isinstance(ev, Piece):
            text = ev.text.lstrip() if self.column == 0 else ev.text
            self.console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
            self.column += len(text)
        elif isinstance(ev, VadEvent):
            self.console.print(f" {END_OF_TURN}", style="dim", markup=False, highlight=False)
            self.column = 0

    def close(self) -> None:
        if self.column:
            self.console.print()
            self.column = 0


@dataclass
class Outputs:
    """Where each input's transcript goes: one `--output FILE`, or `--output-dir` + `--format`."""

    output: Path | None = None
    output_dir: Path | None = None
    fmt: str = "json"

    def path_for(self, input_path: Path) -> Path | None:
        if self.output is not None:
            return self.output
        if self.output_dir is not None:
            return self.output_dir / f"{input_path.stem}.{self.fmt}"
        return None


def _frames(info: Any) -> int:
    """80 ms frames of a file once resampled to 24 kHz (the progress bar's unit)."""
    n = -(-info.frames * 24000 // info.sample_rate)
    return -(-n // 1920)


def meta(tr: Transcriber, settings: dict[str, Any]) -> dict[str, Any]:
    return {"model": tr.info, "settings": settings}


def run_files(tr: Transcriber, inputs: Sequence[Path], outs: Outputs, batch_size: int,
              console: Any, settings: dict[str, Any]) -> list[Transcript]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .audio_in import wav_info

    if len(inputs) == 1:  # one file: stream its text as it comes
        printer = TextPrinter(console)
        results = [tr.transcribe_file(inputs[0], on_event=printer)]
        printer.close()
    else:
        frames = sum(_frames(wav_info(p)) for p in inputs)
        with Progress(TextColumn("transcribing"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task("files", total=frames)
            results = tr.transcribe_files(inputs, batch_size=batch_size,
                                          on_progress=lambda n: bar.advance(task, n))
    for p, r in zip(inputs, results, strict=True):
        dest = outs.path_for(p)
        if dest is not None:
            write_transcript(dest, r, meta(tr, settings))
        if len(inputs) > 1:
            console.print(f"{p}: {r.text}", markup=False, highlight=False)
    return results


def run_live(tr: Transcriber, device: str | None, duration: float | None, output: Path | None,
             console: Any, settings: dict[str, Any], record: Path | None = None) -> Transcript:
    """Transcribe the microphone until `duration` or Ctrl+C; `record` saves what was heard
    (24 kHz wav: transcribing it as a file gives the same words)."""
    import numpy as np

    from ..audio.wav import write_wav
    from .mic import Microphone

    result = Transcript("microphone")
    printer = TextPrinter(console)
    sess = tr.session(1)
    heard: list[Any] = []
    t0 = time.perf_counter()
    try:
        with Microphone(device) as mic:
            console.print("listening (Ctrl+C to stop)", style="dim", markup=False)
            while duration is None or sess.audio_frames * 0.08 < duration:
                frame = mic.read_frame(timeout=2.0)
                if frame is None:
                    raise RuntimeError("the microphone delivers no audio")
                if record is not None:
                    heard.append(frame)
                for ev in sess.feed(frame[None])[0]:
                    printer(ev)
                    result.add([ev])
    except KeyboardInterrupt:
        pass
    finally:
        for ev in sess.finish()[0]:
            printer(ev)
            result.add([ev])
        printer.close()
        result.duration = sess.audio_frames * 0.08
        result.steps, result.wall_s = sess.steps, time.perf_counter() - t0
        if output is not None:
            write_transcript(output, result, meta(tr, settings))
        if record is not None:
            write_wav(record, np.concatenate(heard) if heard else np.zeros(0, np.float32))
        console.print(f"{result.duration:.1f} s transcribed, {len(result.words)} words, "
                      f"{len(result.vad)} ends of turn", style="dim", markup=False)
    return result


__all__ = ["run_files", "run_live", "Outputs", "TextPrinter"]
