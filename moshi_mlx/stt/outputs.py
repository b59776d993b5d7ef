"""Transcript files: plain text, JSON (words, VAD events, model, settings) and SRT subtitles.

`write_transcript(path, transcript, meta)` picks the format from the suffix (.txt, .json, .srt).
- TXT: the words separated by spaces, a new line after each end of turn (VAD), final newline.
- JSON: `{"input", "duration_s", "text", "words": [{"text", "start", "stop"}], "vad": [{"time",
  "prob"}], "steps", "wall_s", "rtf", "model": {...}, "settings": {...}}`; times in seconds
  of the input audio; `wall_s` / `rtf` are those of the batch the file ran in.
- SRT: cues of at most `MAX_CUE_WORDS` words and `MAX_CUE_SECONDS`, cut at ends of turn and at
  pauses longer than `PAUSE_SECONDS`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .transcriber import Transcript
from .words import Word

FORMATS = (".txt", ".json", ".srt")
MAX_CUE_WORDS = 10
MAX_CUE_SECONDS = 5.0
PAUSE_SECONDS = 1.0


def check_output(path: Path) -> None:
    """Raise ValueError / OSError before any work if `path` cannot take a transcript."""
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"--output {path}: unknown format {path.suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(FORMATS)}")
    if path.is_dir():
        raise IsADirectoryError(f"--output {path}: is a directory; give a file name")
    if not path.resolve().parent.is_dir():
        raise FileNotFoundError(f"--output {path}: directory {path.parent} does not exist")


def to_text(t: Transcript) -> str:
    turns = sorted(v.time for v in t.vad)
    lines, cur, i = [], [], 0
    for w in t.words:
        while i < len(turns) and turns[i] <= w.start:
            if cur:
                lines.append(" ".join(cur))
                cur = []
            i += 1
        cur.append(w.text)
    if cur:
        lines.append(" ".join(cur))
    return "\n".join(lines) + "\n"


def _srt_time(s: float) -> str:
    ms = int(round(max(0.0, s) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    sec, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{sec:02d},{ms:03d}"


def cues(t: Transcript) -> list[list[Word]]:
    """Words grouped into subtitle cues (see the module docstring)."""
    turns = sorted(v.time for v in t.vad)
    out: list[list[Word]] = []
    for w in t.words:
        cur = out[-1] if out else None
        cut = (cur is None or len(cur) >= MAX_CUE_WORDS
               or w.stop - cur[0].start > MAX_CUE_SECONDS
               or w.start - cur[-1].stop > PAUSE_SECONDS
               or any(cur[-1].stop <= x <= w.start for x in turns))
        if cut:
            out.append([w])
        else:
            cur.append(w)
    return out


def to_srt(t: Transcript) -> str:
    blocks = []
    for i, c in enumerate(cues(t), 1):
        stop = max(c[-1].stop, c[0].start + 0.2)  # a cue needs some duration to show
        blocks.append(f"{i}\n{_srt_time(c[0].start)} --> {_srt_time(stop)}\n"
                      f"{' '.join(w.text for w in c)}\n")
    return "\n".join(blocks)


def to_json(t: Transcript, meta: dict[str, Any] | None = None) -> str:
    return json.dumps(dict(t.to_dict(), **(meta or {})), indent=1, ensure_ascii=False) + "\n"


def write_transcript(path: str | Path, t: Transcript, meta: dict[str, Any] | None = None) -> None:
    path = Path(path)
    kind = path.suffix.lower()
    text = to_json(t, meta) if kind == ".json" else to_srt(t) if kind == ".srt" else to_text(t)
    path.write_text(text, encoding="utf-8")
