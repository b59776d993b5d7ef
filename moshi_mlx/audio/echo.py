"""Acoustic echo cancellation for the live chat: removes Moshi's own voice from the microphone.

On laptop speakers the microphone hears what Moshi plays; without cancellation Moshi takes its own
voice for the user's. `EchoCanceller.process(mic, played)` takes one 80 ms microphone frame (24 kHz
float32, 1920 samples) and what the output callback played in the same slot, and returns the
microphone with the echo removed. It runs on the model's side of the queues (never in an audio
callback): it costs a few milliseconds per frame.

Which canceller: Speex's (speexdsp: a frequency-domain adaptive filter plus a residual-echo
suppressor) through the `pyaec` package, chosen over WebRTC's AEC3 (the `livekit` package) on
measurements (`benchmarks/echo_candidates.py`, figures in benchmarks/results and the README): both
remove most of the echo, but AEC3's double-talk suppressor also removed much of the user's voice
when the user spoke over Moshi (STOI far below Speex's), and Moshi must hear the user interrupt.
pyaec ships speexdsp compiled into a small ctypes library (wheels for macOS arm64, Linux x86-64,
Windows); the backend is `_SpeexBackend`, so swapping libraries is a one-class change. Two Speex
stages run in a row (a linear one, then one with the preprocessor): the second removes much of
the first one's linear residual. pyaec's preprocessor also runs Speex's noise suppression (the
binding cannot turn it off; it adds one 20 ms block of latency); its gain control stays off.
pyaec leaves Speex at its 8 kHz default rate, whose input DC notch is a ~400 Hz high-pass at
24 kHz; `_NotchUndo` turns it back into the notch Speex uses at high rates.

Delay: the canceller sees two streams, the microphone and what was played, each counted from its
first sample; the stream delay is where a played sample's echo lands in the microphone stream,
relative to the same index (ms; PortAudio's DAC time of the first played sample minus the ADC time
of the first recorded one, plus the acoustic path). It can be negative (down to -300 ms) when
output buffers were filled before the input started. Speex's filter models 300 ms of echo path
from where the reference is aligned: the stream delay minus a 20 ms margin, so an estimate a little
too long still keeps the echo's onset inside the filter. The delay is refined from the signals
themselves: about twice a second, while Moshi speaks, a GCC-PHAT cross-correlation of the raw
microphone against the reference (lags -300..600 ms, at 6 kHz) finds the echo's main path; two
agreeing, confident estimates more than 15 ms from the delay in use replace it (and restart the
adaptation), e.g. after a device or latency change; the first one, replacing PortAudio's guess,
needs only one very clear peak (so the adaptation starts early).

Measured suppression (`erle_db`, and its session median in `stats()`): ERLE (echo return loss enhancement, 10 log10 of microphone power over output
power) on frames where the reference is playing, smoothed over about a second, for the status line
and the session stats. While the user talks over Moshi it drops (their voice is kept): it measures
the echo only where Moshi alone speaks.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import io
import logging
import time
from typing import Any

import numpy as np

from ..conversation import FRAME_SIZE, SAMPLE_RATE

log = logging.getLogger(__name__)

SUB_FRAME = 480  # Speex runs on 20 ms blocks (its documented sweet spot is 10-20 ms)
TAIL_MS = 300  # echo path length the adaptive filter models (room reverberation + delay error)
MARGIN_MS = 20  # the reference is aligned this much early, so an estimate a bit long still works
REALIGN_MS = 15  # a measured delay this far from the one in use replaces it
MAX_DELAY_MS = 600  # longest stream delay the estimator looks for
MAX_LEAD_MS = 300  # the played stream may also run ahead of the recorded one (negative delay)
MAX_BACKLOG_S = 2.5  # microphone frames may reach the canceller this late (live.MAX_LAG_FRAMES)
ESTIMATE_EVERY = 6  # frames between delay estimates (~0.5 s); every 2 until a first measurement
ESTIMATE_WINDOW_S = 1.0  # microphone history correlated against the reference
DECIMATE = 4  # the estimator works at 6 kHz
MIN_CONFIDENCE = 8.0  # GCC-PHAT peak over the correlation's spread needed to trust an estimate
ACTIVE_REF_RMS = 10 ** (-50 / 20)  # a reference frame this loud counts as Moshi speaking
ERLE_SMOOTHING = 0.1  # per-frame weight of the smoothed ERLE (about a second)

INSTALL_HINT = "pip install pyaec, or --echo off"


class EchoCancellerUnavailable(RuntimeError):
    """The echo-cancellation library is missing or cannot be loaded (one line, with the fix)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"echo cancellation is unavailable: {reason} ({INSTALL_HINT})")


def _load_pyaec() -> Any:
    # pyaec prints (rather than raises) when its shared library does not load, then fails with an
    # AttributeError at import: capture the print so the user sees one line that names the cause.
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            import pyaec
    except ImportError:
        raise EchoCancellerUnavailable("the pyaec package is not installed") from None
    except Exception as e:
        detail = out.getvalue().strip().splitlines()
        raise EchoCancellerUnavailable(
            f"pyaec cannot load its library ({detail[-1] if detail else e})") from None
    if getattr(pyaec, "lib", None) is None or not hasattr(pyaec, "Aec"):
        raise EchoCancellerUnavailable("pyaec cannot load its library")
    return pyaec


def check_available() -> None:
    """Raises `EchoCancellerUnavailable` if the canceller cannot run here (before a model load)."""
    _SpeexBackend(SUB_FRAME, SAMPLE_RATE)


class _SpeexStage:
    """One speexdsp echo canceller (+ its preprocessor if `preprocess`) on int16 blocks."""

    def __init__(self, block: int, rate: int, preprocess: bool) -> None:
        pyaec = _load_pyaec()
        try:
            self._aec = pyaec.Aec(block, int(rate * TAIL_MS / 1000), rate, preprocess)
        except Exception as e:
            raise EchoCancellerUnavailable(f"pyaec cannot create a canceller ({e})") from None
        self.block = block
        # Call the C function on NumPy buffers: pyaec's own wrapper goes through Python lists
        # (about 10x slower); fall back to it if a later pyaec changes its internals.
        self._fn = getattr(pyaec.lib, "AecCancelEcho", None)
        self._handle = getattr(self._aec, "_aec", None)
        self._out = np.zeros(block, np.int16)

    def __call__(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """int16 [block] x2 -> int16 [block]."""
        if self._fn is None or self._handle is None:
            return np.asarray(self._aec.cancel_echo(mic.tolist(), ref.tolist()), np.int16)
        p16 = ctypes.POINTER(ctypes.c_int16)
        mic, ref = np.ascontiguousarray(mic), np.ascontiguousarray(ref)
        self._fn(self._handle, mic.ctypes.data_as(p16), ref.ctypes.data_as(p16),
                 self._out.ctypes.data_as(p16), self.block)
        return self._out.copy()


class _NotchUndo:
    """Undoes most of Speex's input high-pass. pyaec never tells the echo canceller the sample
    rate, so it keeps its 8 kHz default and uses the DC notch meant for 8 kHz (radius 0.9): at
    24 kHz that is a high-pass at about 400 Hz (-17 dB at 200 Hz, per stage), which would thin
    the user's voice. After each stage, G = H(0.982) / H(0.9) turns it into the notch Speex uses
    above 12 kHz (-3 dB at 100 Hz). The (1 - z^-1)^2 zeros cancel, so G is a stable biquad; it is
    applied as its impulse response truncated where it has decayed below 1e-7 (1024 taps), by FFT.
    """

    TAPS = 1024

    def __init__(self, r_from: float = 0.9, r_to: float = 0.982) -> None:
        d_from = r_from ** 2 + 0.7 * (1 - r_from) ** 2
        d_to = r_to ** 2 + 0.7 * (1 - r_to) ** 2
        # G(z) = (r_to / r_from) (1 - 2 r_from z^-1 + d_from z^-2) / (1 - 2 r_to z^-1 + d_to z^-2)
        b = np.array([1.0, -2 * r_from, d_from]) * (r_to / r_from)
        h = np.zeros(self.TAPS)
        y1 = y2 = 0.0
        for n in range(self.TAPS):
            x = b[n] if n < 3 else 0.0
            y = x + 2 * r_to * y1 - d_to * y2
            h[n], y2, y1 = y, y1, y
        self._h = h
        self._hist = np.zeros(self.TAPS - 1)
        self._nfft = 0
        self._hf = np.zeros(0, complex)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        seg = np.concatenate([self._hist, x.astype(np.float64)])
        nfft = 1 << int(np.ceil(np.log2(len(seg))))
        if nfft != self._nfft:
            self._nfft, self._hf = nfft, np.fft.rfft(self._h, nfft)
        y = np.fft.irfft(np.fft.rfft(seg, nfft) * self._hf, nfft)[self.TAPS - 1:len(seg)]
        self._hist = seg[-(self.TAPS - 1):]
        return y


class _SpeexBackend:
    """Two Speex cancellers in a row, both fed the same reference: a linear one, then one with
    the preprocessor (residual-echo suppressor). The second removes much of the first one's
    linear residual (measured in benchmarks/results/echo_candidates.md: more echo removed than
    one stage, double talk still intelligible) for twice the cost."""

    def __init__(self, block: int, rate: int) -> None:
        self.stages = [_SpeexStage(block, rate, False), _SpeexStage(block, rate, True)]
        self.undo = [_NotchUndo(), _NotchUndo()]

    def __call__(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        for stage, undo in zip(self.stages, self.undo, strict=True):
            mic = _to_int16(undo(stage(mic, ref).astype(np.float64) / 32768))
        return mic


def _to_int16(x: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(np.asarray(x, np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def estimate_delay(mic: np.ndarray, ref: np.ndarray, max_lag: int) -> tuple[int, float]:
    """GCC-PHAT lag of `mic` behind `ref` and its confidence.

    `ref` starts `max_lag` samples before `mic` in stream time and may run past its end by
    `len(ref) - len(mic) - max_lag` samples (the lead). Returns (lag in samples, peak / spread of
    the correlation); the lag is where `mic[t]` best matches `ref[t - lag]`, from -lead to max_lag.
    """
    n = len(mic)
    nfft = 1 << int(np.ceil(np.log2(len(ref) + n)))
    cross = np.fft.rfft(ref, nfft) * np.conj(np.fft.rfft(mic, nfft))
    cross /= np.abs(cross) + 1e-12  # PHAT: whiten, so the peak is sharp for speech
    r = np.fft.irfft(cross, nfft)[: len(ref) - n + 1]  # r[m] = sum_t mic[t] ref[t + m]
    m = int(np.argmax(r))
    spread = float(np.std(r)) + 1e-12
    return max_lag - m, float(r[m] / spread)


class EchoCanceller:
    """Removes the played reference's echo from 24 kHz microphone frames (model thread only).

    `process(mic_frame, played_frame)`: both float32 [1920] for the same 80 ms slot (`played_frame`
    may be any length: what the output callback played since the previous call, silence included,
    appended to the reference stream). Returns the cleaned float32 frame, same length as `mic_frame`.
    """

    def __init__(self, stream_delay_ms: float = 0.0, estimate: bool = True,
                 sample_rate: int = SAMPLE_RATE) -> None:
        self.rate = int(sample_rate)
        self.block = SUB_FRAME * self.rate // SAMPLE_RATE
        self._backend = _SpeexBackend(self.block, self.rate)
        self.estimate = estimate
        # History: the estimator's window and lag range, plus the microphone backlog the live
        # loop allows (2 s): a late microphone frame still finds its reference.
        keep_s = ESTIMATE_WINDOW_S + (MAX_DELAY_MS + MAX_LEAD_MS) / 1000 + MAX_BACKLOG_S
        self._keep = int(keep_s * self.rate)
        self._ref = np.zeros(0, np.float32)  # the reference stream's recent history
        self._ref_end = 0  # stream index just past the last reference sample
        self._mic_hist = np.zeros(0, np.float32)  # raw microphone history (for the estimator)
        self._mic_pos = 0  # stream index of the next microphone sample
        self._carry_in = np.zeros(0, np.float32)  # microphone samples short of a Speex block
        self._carry_ref = np.zeros(0, np.float32)
        self._carry_out = np.zeros(0, np.float32)
        self.delay_ms = 0.0
        self.delay_source = "default"
        self.set_stream_delay_ms(stream_delay_ms, source="portaudio" if stream_delay_ms else
                                 "default")
        self._candidate: float | None = None
        self.frames = 0
        self.active_frames = 0  # frames processed while the reference was playing
        self.delay_changes = 0
        self._p_in = self._p_out = 0.0  # smoothed powers for the ERLE
        self._erle: float | None = None
        self._erle_hist: collections.deque[float] = collections.deque(maxlen=12 * 60 * 60)
        self.cost_ms: list[float] = []

    # --- configuration --------------------------------------------------------------------------
    def set_stream_delay_ms(self, delay_ms: float, source: str = "portaudio") -> None:
        """Delay between a sample being handed over as played and its echo in the microphone
        stream (ms; from PortAudio's output + input latencies, or measured)."""
        delay_ms = float(delay_ms)
        if not np.isfinite(delay_ms):
            raise ValueError(f"stream delay must be a finite number of ms, got {delay_ms}")
        self.delay_ms = min(max(delay_ms, -float(MAX_LEAD_MS)), float(MAX_DELAY_MS))
        self.delay_source = source
        shift = round((self.delay_ms - MARGIN_MS) * self.rate / 1000)
        if shift != getattr(self, "_shift", shift):
            # A shifted reference makes the adapted filter wrong everywhere; Speex re-converges
            # from scratch in about a second, from a wrong filter much more slowly.
            self._backend = _SpeexBackend(self.block, self.rate)
        self._shift = shift

    # --- processing -----------------------------------------------------------------------------
    def process(self, mic_frame: np.ndarray, played_frame: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        mic = np.nan_to_num(np.asarray(mic_frame, np.float32).reshape(-1))
        played = np.nan_to_num(np.asarray(played_frame, np.float32).reshape(-1))
        self._push_ref(played)
        n = len(mic)
        ref = self._aligned_ref(self._mic_pos, n)
        self._mic_hist = np.concatenate([self._mic_hist, mic])[-self._keep:]
        self._mic_pos += n
        out = self._cancel(mic, ref)
        self.frames += 1
        self._update_erle(mic, out, ref)
        every = ESTIMATE_EVERY if self.delay_source == "measured" else 2
        if self.estimate and self.frames % every == 0:
            self._refine_delay()
        self.cost_ms.append(1000 * (time.perf_counter() - t0))
        if len(self.cost_ms) > 1000:
            del self.cost_ms[:500]
        return out

    def _push_ref(self, played: np.ndarray) -> None:
        if self._ref_end < self._mic_pos and not len(self._ref):
            # no reference yet: the stream starts where the microphone is, not at 0
            self._ref_end = self._mic_pos
        self._ref = np.concatenate([self._ref, played])[-self._keep:]
        self._ref_end += len(played)

    def _ref_slice(self, start: int, n: int) -> np.ndarray:
        """Reference samples [start, start + n) in stream time, zeros where none was kept/played."""
        out = np.zeros(n, np.float32)
        first = self._ref_end - len(self._ref)
        lo, hi = max(start, first), min(start + n, self._ref_end)
        if hi > lo:
            out[lo - start:hi - start] = self._ref[lo - first:hi - first]
        return out

    def _aligned_ref(self, mic_start: int, n: int) -> np.ndarray:
        return self._ref_slice(mic_start - self._shift, n)

    def _cancel(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        b = self.block
        xin = np.concatenate([self._carry_in, mic])
        xref = np.concatenate([self._carry_ref, ref])
        whole = len(xin) // b * b
        outs = [self._carry_out]
        m16, r16 = _to_int16(xin[:whole]), _to_int16(xref[:whole])
        for i in range(0, whole, b):
            outs.append(self._backend(m16[i:i + b], r16[i:i + b]).astype(np.float32) / 32768)
        self._carry_in, self._carry_ref = xin[whole:], xref[whole:]
        out = np.concatenate(outs)
        # A frame that is not a multiple of the Speex block: the output lags by the remainder
        # (zero-padded at the start), so every call still returns len(mic) samples.
        if len(out) < len(mic):
            out = np.concatenate([np.zeros(len(mic) - len(out), np.float32), out])
        self._carry_out = out[len(mic):]
        return out[:len(mic)]

    def _update_erle(self, mic: np.ndarray, out: np.ndarray, ref: np.ndarray) -> None:
        if np.sqrt(np.mean(ref ** 2)) < ACTIVE_REF_RMS:
            return
        self.active_frames += 1
        a = ERLE_SMOOTHING if self.active_frames > 1 else 1.0
        self._p_in = (1 - a) * self._p_in + a * float(np.mean(mic.astype(np.float64) ** 2))
        self._p_out = (1 - a) * self._p_out + a * float(np.mean(out.astype(np.float64) ** 2))
        if self._p_in > 1e-10:
            self._erle = 10 * np.log10(self._p_in / max(self._p_out, 1e-12))
            self._erle_hist.append(float(self._erle))

    def _refine_delay(self) -> None:
        d = DECIMATE
        w = int(ESTIMATE_WINDOW_S * self.rate) // d * d
        max_lag = int(MAX_DELAY_MS * self.rate / 1000) // d
        if len(self._mic_hist) < w:
            return
        lead = min(int(MAX_LEAD_MS * self.rate / 1000), self._ref_end - self._mic_pos) // d
        lead = max(lead, 0)
        ref = self._ref_slice(self._mic_pos - w - max_lag * d, w + (max_lag + lead) * d)
        if np.sqrt(np.mean(ref[max_lag * d:] ** 2)) < 10 * ACTIVE_REF_RMS:
            return  # Moshi mostly silent: nothing to correlate
        mic = self._mic_hist[-w:].reshape(-1, d).mean(1)
        lag, conf = estimate_delay(mic, ref.reshape(-1, d).mean(1), max_lag)
        if conf < MIN_CONFIDENCE:
            self._candidate = None
            return
        est = lag * d * 1000 / self.rate
        agree = self._candidate is not None and abs(est - self._candidate) <= 2.0
        # The first measurement replaces PortAudio's guess on one clear peak (adaptation only
        # starts in earnest once the delay is right); later changes need two agreeing ones.
        agree = agree or (self.delay_source != "measured" and conf >= 2 * MIN_CONFIDENCE)
        self._candidate = est
        # Within +-15 ms the echo's onset is still near the start of the filter (see MARGIN_MS):
        # moving the alignment would only restart the adaptation.
        if agree and abs(est - self.delay_ms) > REALIGN_MS:
            log.info("echo delay %.0f ms -> %.0f ms (measured, confidence %.0f)",
                     self.delay_ms, est, conf)
            self.set_stream_delay_ms(est, source="measured")
            self.delay_changes += 1

    # --- reporting ------------------------------------------------------------------------------
    @property
    def erle_db(self) -> float | None:
        """Smoothed echo suppression (dB) on frames where Moshi played; None before any."""
        return None if self._erle is None else float(self._erle)

    def stats(self) -> dict[str, Any]:
        cost = sorted(self.cost_ms)
        return {
            "echo_canceller": "speexdsp (pyaec)",
            "echo_erle_db": None if self._erle is None else round(float(self._erle), 1),
            # the session's median: mostly frames where only Moshi spoke, unlike the last value
            "echo_erle_db_p50": (round(float(np.median(self._erle_hist)), 1)
                                 if self._erle_hist else None),
            "echo_delay_ms": round(self.delay_ms, 1),
            "echo_delay_source": self.delay_source,
            "echo_delay_changes": self.delay_changes,
            "echo_active_frames": self.active_frames,
            "echo_ms_p50": round(cost[len(cost) // 2], 2) if cost else None,
        }


def measure_cost(frames: int = 50) -> list[float]:
    """Milliseconds per 80 ms frame of the canceller on a synthetic echo (noise through a 60 ms
    delay, after 10 frames of warm-up), for `cli.py bench`; raises `EchoCancellerUnavailable`."""
    rng = np.random.default_rng(0)
    played = (0.1 * rng.standard_normal((frames + 10) * FRAME_SIZE)).astype(np.float32)
    d = int(0.06 * SAMPLE_RATE)
    mic = np.concatenate([np.zeros(d, np.float32), 0.5 * played[:-d]])
    ec = EchoCanceller(stream_delay_ms=60)
    for i in range(frames + 10):
        ec.process(mic[i * FRAME_SIZE:(i + 1) * FRAME_SIZE], played[i * FRAME_SIZE:(i + 1) * FRAME_SIZE])
    return ec.cost_ms[10:]
