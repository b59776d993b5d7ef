"""Session records: the transcript JSON and the two-channel (user, Moshi) recording.

`SessionRecorder` consumes the same typed events as the UI (`moshi_mlx.conversation`), plus the
user's frames and the audio counters of the live loop, and writes what the user asked for.

Transcript JSON: `{"model": {...}, "settings": {...}, "seed": N, "pieces": [{"frame", "time_s",
"token", "text"}], "text": "...", "stats": {"frames", "late_frames", "lost_frames",
"frame_ms_p50", "frame_ms_p95", "frame_ms_max", "duration_s", ...}}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..conversation import FRAME_S, SAMPLE_RATE, AudioFrame, Event, FrameTiming, TextPiece


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


class SessionRecorder:
    """Accumulates one session's text, audio and timings (memory: 2 x 24 kHz float32 per second)."""

    def __init__(self, keep_audio: bool = True) -> None:
        self.keep_audio = keep_audio
        self.pieces: list[TextPiece] = []
        self.frame_ms: list[float] = []
        self.user: list[np.ndarray] = []
        self.moshi: list[np.ndarray] = []
        self.frames = 0

    def add_user(self, pcm: np.ndarray) -> None:
        if self.keep_audio:
            self.user.append(np.asarray(pcm, np.float32).reshape(-1))

    def add(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, TextPiece):
                self.pieces.append(ev)
            elif isinstance(ev, AudioFrame):
                self.frames += 1
                if self.keep_audio:
                    self.moshi.append(ev.pcm)
            elif isinstance(ev, FrameTiming):
                self.frame_ms.append(ev.total_ms)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces).strip()

    def moshi_audio(self) -> np.ndarray:
        return np.concatenate(self.moshi) if self.moshi else np.zeros(0, np.float32)

    def stats(self, late_frames: int = 0, lost_frames: int = 0, **extra: Any) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "late_frames": int(late_frames),
            "lost_frames": int(lost_frames),
            "frame_ms_p50": round(percentile(self.frame_ms, 50), 3),
            "frame_ms_p95": round(percentile(self.frame_ms, 95), 3),
            "frame_ms_max": round(max(self.frame_ms, default=0.0), 3),
            "budget_ms": FRAME_S * 1e3,
            "duration_s": round(self.frames * FRAME_S, 3),
            **extra,
        }

    def transcript(self, *, model: dict[str, Any], settings: dict[str, Any], seed: int | None,
                   stats: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": model,
            "settings": settings,
            "seed": seed,
            "text": self.text,
            "pieces": [{"frame": p.frame, "time_s": round(p.time_s, 3), "token": p.token,
                        "text": p.text} for p in self.pieces],
            "stats": stats,
        }

    def write_transcript(self, path: str | Path, **kw: Any) -> dict[str, Any]:
        data = self.transcript(**kw)
        Path(path).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        return data

    def write_recording(self, path: str | Path) -> None:
        """Two channels at 24 kHz: channel 0 the user, channel 1 Moshi (aligned by frame)."""
        from .wav import write_wav

        user = np.concatenate(self.user) if self.user else np.zeros(0, np.float32)
        moshi = self.moshi_audio()
        n = max(len(user), len(moshi))
        both = np.zeros((2, n), np.float32)
        both[0, : len(user)] = user
        both[1, : len(moshi)] = moshi
        write_wav(path, both, SAMPLE_RATE)
