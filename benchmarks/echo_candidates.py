"""Echo-canceller candidates on synthetic echo paths: echo removed, user intelligibility, cost.

    python benchmarks/echo_candidates.py [--json out.json]

Needs `pystoi`, and `livekit` for WebRTC's AEC3 (`pip install livekit pystoi`); a candidate whose
package is missing is left out. Moshi's voice (tests/assets/speech/moshi.wav) goes through a
synthetic room (bulk delay, direct path, 120 ms of decaying reflections) into the microphone; from
7 s the user (user.wav) talks over it. Per candidate and path:
- ERLE: microphone power over output power where only Moshi speaks, 3-7 s (after adaptation);
- STOI of the output against the user's words during double talk (aligned by cross-correlation:
  WebRTC's module delays its output by ~9 ms at 24 kHz), beside the raw microphone's;
- ms per 80 ms frame (p50), on this machine.
Candidates: WebRTC AEC3 through livekit (10 ms int16 frames; `set_stream_delay_ms` given the true
delay), Speex through pyaec as `moshi_mlx.audio.echo.EchoCanceller` uses it (two stages, true delay
given), and one Speex stage alone.
Prints a markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moshi_mlx.audio.wav import read_wav  # noqa: E402
from moshi_mlx.testing.echo_metrics import aligned_stoi, db  # noqa: E402

RATE, FRAME = 24000, 1920
USER_AT = 7 * RATE
ASSETS = ROOT / "tests" / "assets" / "speech"


def room(delay_ms: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d, n = int(RATE * delay_ms / 1000), int(RATE * (delay_ms + 120) / 1000)
    h = np.zeros(n)
    h[d:] = rng.standard_normal(n - d) * np.exp(-np.arange(n - d) / (RATE * 0.03))
    h[d] += 3.0
    return (h / np.sqrt(np.sum(h ** 2))).astype(np.float32)


class WebRtcAec3:
    """livekit.rtc.AudioProcessingModule with only the echo canceller on."""

    name = "WebRTC AEC3 (livekit)"

    def __init__(self, delay_ms: float) -> None:
        from livekit import rtc
        self.rtc, self.delay = rtc, int(delay_ms)
        self.apm = rtc.AudioProcessingModule(echo_cancellation=True)

    def _frame(self, x: np.ndarray):
        pcm = np.round(np.clip(x, -1, 32767 / 32768) * 32768).astype("<i2")
        return self.rtc.AudioFrame(bytearray(pcm.tobytes()), RATE, 1, len(x))

    def process(self, mic: np.ndarray, played: np.ndarray) -> np.ndarray:
        out = np.empty_like(mic)
        for i in range(0, len(mic), 240):  # the module takes 10 ms frames
            self.apm.process_reverse_stream(self._frame(played[i:i + 240]))
            self.apm.set_stream_delay_ms(self.delay)
            f = self._frame(mic[i:i + 240])
            self.apm.process_stream(f)
            out[i:i + 240] = np.frombuffer(f.data, "<i2").astype(np.float32) / 32768
        return out


class Speex:
    name = "Speex x2 (pyaec, as moshi_mlx uses it)"

    def __init__(self, delay_ms: float) -> None:
        from moshi_mlx.audio.echo import EchoCanceller
        self.ec = EchoCanceller(stream_delay_ms=delay_ms)

    def process(self, mic: np.ndarray, played: np.ndarray) -> np.ndarray:
        return self.ec.process(mic, played)


class SpeexOneStage(Speex):
    """The same with only the stage that has the residual-echo suppressor (the delay is exact,
    so the estimator is off: a re-alignment would rebuild both stages)."""

    name = "Speex x1 (pyaec, suppressor stage only)"

    def __init__(self, delay_ms: float) -> None:
        super().__init__(delay_ms)
        self.ec.estimate = False
        b = self.ec._backend
        b.stages, b.undo = b.stages[1:], b.undo[1:]




def measure(cls, delay_ms: float, echo_over_user_db: float) -> dict:
    moshi = 0.5 * read_wav(ASSETS / "moshi.wav")[: 13 * RATE]
    user = read_wav(ASSETS / "user.wav")
    echo = np.convolve(moshi, room(delay_ms))[: len(moshi)].astype(np.float32)
    user = user * np.sqrt(np.mean(echo ** 2) / np.mean(user ** 2)) * 10 ** (-echo_over_user_db / 20)
    user = user[: len(echo) - USER_AT]
    mic = echo.copy()
    mic[USER_AT:USER_AT + len(user)] += user
    mic += 1e-4 * np.random.default_rng(1).standard_normal(len(mic)).astype(np.float32)
    ec = cls(delay_ms)
    out, ms = np.zeros_like(mic), []
    for i in range(0, len(mic) - FRAME + 1, FRAME):
        t0 = time.perf_counter()
        out[i:i + FRAME] = ec.process(mic[i:i + FRAME], moshi[i:i + FRAME])
        ms.append(1000 * (time.perf_counter() - t0))
    only = slice(3 * RATE, USER_AT)
    return {"candidate": cls.name, "delay_ms": delay_ms, "echo_over_user_db": echo_over_user_db,
            "erle_db": round(db(mic[only]) - db(out[only]), 1),
            "stoi_raw": round(aligned_stoi(user, mic, USER_AT), 3),
            "stoi_out": round(aligned_stoi(user, out, USER_AT), 3),
            "ms_per_frame_p50": round(float(np.median(ms)), 2),
            "finite": bool(np.isfinite(out).all())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    cands = []
    for cls, mod in ((WebRtcAec3, "livekit"), (Speex, "pyaec"), (SpeexOneStage, "pyaec")):
        try:
            __import__(mod)
            cands.append(cls)
        except ImportError:
            print(f"({mod} not installed: {cls.name} left out)")
    rows = [measure(c, d, r) for c in cands for d in (50, 150) for r in (0.0, 6.0)]
    print(f"{platform.machine()} {platform.system()}, Python {platform.python_version()}\n")
    print("| candidate | echo path | echo vs user | ERLE | STOI raw mic | STOI after | ms/frame |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['candidate']} | {r['delay_ms']:.0f} ms | {r['echo_over_user_db']:+.0f} dB | "
              f"{r['erle_db']:.1f} dB | {r['stoi_raw']:.2f} | {r['stoi_out']:.2f} | "
              f"{r['ms_per_frame_p50']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
