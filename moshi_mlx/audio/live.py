"""Full-duplex sound-card I/O for the live chat: sounddevice callbacks <-> frame queues.

Design (the reasons are latency and robustness):
- Two sounddevice streams (input and output) at 24 kHz mono, one 80 ms Mimi frame (1920 samples)
  per callback. Separate streams rather than one duplex stream: PortAudio's ALSA duplex mode stalls on
  PulseAudio here, and Kyutai's MLX app also uses two.
- Callbacks only move blocks: the input callback copies the block into a bounded queue; the output
  callback copies the next frame out of the jitter buffer or plays silence. No model work, no
  resampling, no logging in callbacks.
- If a device cannot open at 24 kHz, it is opened at its own default rate with a block of 80 ms at
  that rate, and the model thread resamples (`StreamResampler`) on its side of the queues.
- Input queue bounded at `max_lag_frames` (2 s by default, enough for any burst a device
  delivers): only when the model falls that far behind are the oldest input frames dropped
  (counted in `lost_frames`), so the lag stays bounded and the session recovers.
- Output: `JitterBuffer` (moshi_mlx/audio/jitter.py) absorbs bursts on both sides without dropping
  Moshi's voiced frames; it brings an excess latency back down by skipping quiet frames or, in
  continuous speech, by playing frames up to 10% faster (`StreamResampler.speed`), both counted.
  Its queued latency, the device's reported latencies and the burst sizes seen are reported.
- Playback only (`input=False`, for `cli.py speak`): no input stream is opened and no microphone
  is needed; the caller (`moshi_mlx.tts.play`) waits for room in the buffer instead of letting it
  drop frames.
- Echo reference (`keep_played=True`, for `moshi_mlx.audio.echo`): the output callback also keeps a
  copy of every block it played (silence, skips and catch-up included: exactly what went out),
  and both callbacks note PortAudio's time of their first sample (ADC / DAC). `take_played()`
  hands the model thread what was played since the last call (at 24 kHz); `echo_delay_ms()` is the
  DAC time of the first played sample minus the ADC time of the first recorded one: the offset
  between the two streams that the canceller aligns. Input blocks dropped past `max_lag_frames`
  come back from `take_dropped_input()` as silence of the same length, so the canceller's
  microphone stream stays aligned with the played one.
"""

from __future__ import annotations

import collections
import logging
import queue
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..conversation import FRAME_S, FRAME_SIZE, SAMPLE_RATE
from .jitter import CATCHUP_SPEED, JitterBuffer

log = logging.getLogger(__name__)

MAX_LAG_FRAMES = 25  # 2 s: past this much backlog on either side, frames are dropped (lost)


class AudioDeviceError(RuntimeError):
    """No usable sound device (none present, bad index/name, cannot open)."""


class StreamResampler:
    """Stateful linear-interpolation resampler for a continuous stream cut into blocks.

    Linear interpolation is enough for the live path's fallback rates (speech band, 44.1/48 kHz <->
    24 kHz); the file path uses the real resampler in `moshi_mlx.audio.wav`. `speed` > 1 plays the
    stream faster (fewer output samples, continuous across blocks): the jitter buffer's catch-up.
    """

    def __init__(self, sr_in: int, sr_out: int) -> None:
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._step = self.sr_in / self.sr_out  # input samples per output sample
        self.speed = 1.0
        self._pos = 0.0  # position of the next output sample, relative to _prev
        self._prev = np.zeros(0, np.float32)  # last input sample of the previous block

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.sr_in == self.sr_out and self.speed == 1.0 and not len(self._prev):
            return np.asarray(x, np.float32)
        buf = np.concatenate([self._prev, np.asarray(x, np.float32)])
        if len(buf) < 2:
            self._prev = buf
            return np.zeros(0, np.float32)
        step = self._step * self.speed
        n_out = int(np.floor((len(buf) - 1 - self._pos) / step)) + 1
        n_out = max(n_out, 0)
        t = self._pos + step * np.arange(n_out)
        out = np.interp(t, np.arange(len(buf)), buf).astype(np.float32)
        self._pos = self._pos + step * n_out - (len(buf) - 1)
        self._prev = buf[-1:]
        return out


class FrameChunker:
    """Re-cuts a stream of arbitrary-length blocks into fixed-size frames."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf = np.zeros(0, np.float32)

    def push(self, x: np.ndarray) -> list[np.ndarray]:
        self._buf = np.concatenate([self._buf, np.asarray(x, np.float32)])
        n = len(self._buf) // self.size
        frames = [self._buf[i * self.size:(i + 1) * self.size] for i in range(n)]
        self._buf = self._buf[n * self.size:]
        return frames


@dataclass
class AudioStats:
    """Counters shared between the callbacks and the model thread (ints: atomic enough in CPython).

    The output side's counters (played, late, skipped, caught up, lost) live in the jitter buffer's
    `JitterStats`; `LiveAudio.stats` merges both into this view."""

    input_frames: int = 0
    output_frames: int = 0
    late_frames: int = 0  # a frame arrived after its playback slot (silence was played)
    dropped_input: int = 0  # mic frames dropped because the model fell 2 s behind
    dropped_output: int = 0  # Moshi frames dropped past the output buffer's hard cap
    skipped_quiet: int = 0  # quiet output frames skipped to bring an excess latency down
    catchup_frames: int = 0  # output frames played up to 10% faster for the same reason
    input_overflows: int = 0  # PortAudio status flags
    output_underflows: int = 0
    max_input_burst: int = 1  # most microphone blocks delivered back to back
    max_output_burst: int = 1  # most output blocks pulled back to back while playing

    @property
    def lost_frames(self) -> int:
        """Frames with sound that could not be heard or played (skipped quiet frames are not)."""
        return self.dropped_input + self.dropped_output


def list_devices() -> str:
    """The sound devices as sounddevice prints them (AudioDeviceError without PortAudio or when
    there is none: an empty listing printed just a blank line)."""
    sd = _sounddevice()
    devices = sd.query_devices()
    if not len(devices):
        raise AudioDeviceError("no sound devices found (is a sound card or audio server available?)")
    return str(devices)


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio library missing
        raise AudioDeviceError(f"PortAudio is not available ({e}); install libportaudio2") from None
    return sd


def _parse_device(dev: str | int | None) -> str | int | None:
    if isinstance(dev, str) and dev.strip().isdigit():
        return int(dev)
    return dev


def _pick_rate(sd: Any, kind: str, device: Any) -> int:
    """24 kHz if the device accepts it, else the device's default rate (resampled by the app)."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    name = "the default " + kind if device is None else f"{kind} device {device!r}"
    try:
        check(device=device, channels=1, dtype="float32", samplerate=SAMPLE_RATE)
        return SAMPLE_RATE
    except ValueError as e:
        msg = str(e)
        if "sample rate" not in msg.lower() and "samplerate" not in msg.lower():
            raise AudioDeviceError(f"cannot use {name}: {msg} (see --list-devices)") from None
    except Exception as e:  # sd.PortAudioError: no such device, no default device
        raise AudioDeviceError(f"cannot use {name}: {e} (see --list-devices)") from None
    try:
        info = sd.query_devices(device, kind)
    except Exception as e:
        raise AudioDeviceError(f"cannot use {name}: {e} (see --list-devices)") from None
    rate = int(info["default_samplerate"])
    log.info("%s does not take %d Hz; opening it at %d Hz and resampling", name, SAMPLE_RATE, rate)
    return rate


def check_devices(input_device: str | int | None, output_device: str | int | None) -> tuple[int, int]:
    """Fail early (before loading a model) if the devices cannot be used; returns their rates."""
    sd = _sounddevice()
    if not len(sd.query_devices()):
        raise AudioDeviceError("no sound devices found (is a sound card or audio server available?)")
    return (_pick_rate(sd, "input", _parse_device(input_device)),
            _pick_rate(sd, "output", _parse_device(output_device)))


def check_output_device(output_device: str | int | None) -> int:
    """`check_devices` for playback only (no microphone needed); returns the output's rate."""
    sd = _sounddevice()
    if not len(sd.query_devices()):
        raise AudioDeviceError("no sound devices found (is a sound card or audio server available?)")
    return _pick_rate(sd, "output", _parse_device(output_device))


class LiveAudio:
    """Two sounddevice streams feeding `read_frame()` and fed by `write_frame()` (24 kHz frames)."""

    def __init__(
        self,
        input_device: str | int | None = None,
        output_device: str | int | None = None,
        jitter_frames: int = 1,
        max_lag_frames: int = MAX_LAG_FRAMES,
        keep_played: bool = False,
        input: bool = True,
    ) -> None:
        self.input = input  # False: playback only (`speak`), no input stream is opened
        self.input_device = _parse_device(input_device)
        self.output_device = _parse_device(output_device)
        self.jitter_frames = max(1, jitter_frames)
        self.max_lag_frames = max(self.jitter_frames + 1, max_lag_frames)
        self._counts = AudioStats()
        self._in_q: queue.Queue[np.ndarray] = queue.Queue()
        self._last_in = -1.0
        self._in_burst = 0
        self._streams: list[Any] = []
        self.input_rate = self.output_rate = SAMPLE_RATE
        self.input_latency_ms = self.output_latency_ms = 0.0  # PortAudio's reported latencies
        self._set_rates(SAMPLE_RATE, SAMPLE_RATE)
        self._ready_in: list[np.ndarray] = []  # 24 kHz mic frames cut but not yet read
        self.input_level = 0.0  # RMS of the last frame read / written (model thread)
        self.output_level = 0.0
        # Echo reference: device-rate blocks as played (output callback), taken by the model thread.
        self.keep_played = keep_played
        self._played: collections.deque[np.ndarray] = collections.deque()
        self._t_in0: float | None = None  # PortAudio ADC time of the first recorded sample
        self._t_out0: float | None = None  # PortAudio DAC time of the first played sample
        self._dropped_taken = 0

    @property
    def stats(self) -> AudioStats:
        """A snapshot of the input counters and the output buffer's counters."""
        c, j = self._counts, self.jitter.stats
        c.output_frames, c.late_frames, c.dropped_output = j.played, j.underruns, j.lost
        c.skipped_quiet, c.catchup_frames, c.max_output_burst = (
            j.skipped_quiet, j.catchup_frames, j.max_pop_burst)
        return c

    # --- callbacks (PortAudio thread): copy blocks, count, nothing else ---------------------------
    def _on_input(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        c = self._counts
        if status and status.input_overflow:
            c.input_overflows += 1
        c.input_frames += 1
        if self._t_in0 is None:
            self._t_in0 = float(getattr(time_info, "inputBufferAdcTime", 0.0) or 0.0)
        now = time.monotonic()
        self._in_burst = self._in_burst + 1 if now - self._last_in < 0.25 * FRAME_S else 1
        self._last_in = now
        if self._in_burst > c.max_input_burst:
            c.max_input_burst = self._in_burst
        self._in_q.put_nowait(indata[:, 0].copy())  # PortAudio reuses its buffer
        if self._in_q.qsize() > self.max_lag_frames:
            try:
                self._in_q.get_nowait()  # drop the oldest: bounded lag beats complete audio
                c.dropped_input += 1
            except queue.Empty:
                pass

    def _on_output(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status and status.output_underflow:
            self._counts.output_underflows += 1
        self.jitter.pop_into(outdata[:, 0])
        if self.keep_played:  # exactly what goes out, silence included: the echo's reference
            self._played.append(outdata[:, 0].copy())
            if self._t_out0 is None:
                self._t_out0 = float(getattr(time_info, "outputBufferDacTime", 0.0) or 0.0)

    # --- model-thread side ----------------------------------------------------------------------
    def start(self) -> None:
        sd = _sounddevice()
        try:
            if self.input:
                self.input_rate, self.output_rate = check_devices(self.input_device,
                                                                  self.output_device)
            else:
                self.output_rate = check_output_device(self.output_device)
            in_block, out_block = self._set_rates(self.input_rate, self.output_rate)
            if self.input:
                self._streams.append(
                    sd.InputStream(samplerate=self.input_rate, blocksize=in_block, channels=1,
                                   dtype="float32", device=self.input_device,
                                   callback=self._on_input))
            self._streams.append(
                sd.OutputStream(samplerate=self.output_rate, blocksize=out_block, channels=1,
                                dtype="float32", device=self.output_device,
                                callback=self._on_output))
            for s in self._streams:
                s.start()
            if self.input:
                self.input_latency_ms = 1e3 * float(self._streams[0].latency)
            self.output_latency_ms = 1e3 * float(self._streams[-1].latency)
        except AudioDeviceError:
            self.stop()
            raise
        except (sd.PortAudioError, ValueError) as e:
            self.stop()
            raise AudioDeviceError(f"cannot open the sound device: {e}") from None

    def _set_rates(self, input_rate: int, output_rate: int) -> tuple[int, int]:
        """Resamplers, re-cutters and the output buffer between the devices' rates and 24 kHz;
        returns the devices' block sizes (80 ms each)."""
        in_block = round(FRAME_SIZE * input_rate / SAMPLE_RATE)
        out_block = round(FRAME_SIZE * output_rate / SAMPLE_RATE)
        self._resample_in = StreamResampler(input_rate, SAMPLE_RATE)
        self._chunk_in = FrameChunker(FRAME_SIZE)
        self._resample_out = StreamResampler(SAMPLE_RATE, output_rate)
        self._chunk_out = FrameChunker(out_block)
        self._resample_played = StreamResampler(output_rate, SAMPLE_RATE)
        self._in_block = in_block
        self.jitter = JitterBuffer(out_block / output_rate, min_frames=self.jitter_frames,
                                   max_frames=self.max_lag_frames)
        return in_block, out_block

    def stop(self) -> None:
        for s in self._streams:
            try:
                s.stop()
                s.close()
            except Exception as e:  # closing must never mask the real error
                log.debug("closing stream: %s", e)
        self._streams = []

    def __enter__(self) -> LiveAudio:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def lag_frames(self) -> int:
        """Frames waiting on either side: input not yet processed + output not yet played."""
        return self._in_q.qsize() + self.jitter.depth

    @property
    def buffer_ms(self) -> float:
        """Latency the output buffer adds now (queued blocks), before the device's own."""
        return self.jitter.latency_ms

    def read_frame(self, timeout: float = 0.5) -> np.ndarray | None:
        """Next 1920-sample mic frame at 24 kHz, or None if none arrived within `timeout`."""
        if self._ready_in:
            return self._take(self._ready_in)
        while True:
            try:
                block = self._in_q.get(timeout=timeout)
            except queue.Empty:
                return None
            frames = self._chunk_in.push(self._resample_in(block))
            if frames:
                self._ready_in = frames
                return self._take(frames)

    def _take(self, frames: list[np.ndarray]) -> np.ndarray:
        frame = frames.pop(0)
        self.input_level = float(np.sqrt(np.mean(np.square(frame))))
        return frame

    def write_frame(self, pcm: np.ndarray) -> None:
        """Queue one 24 kHz frame for playback (resampled to the device rate, and played faster
        while the jitter buffer catches up)."""
        pcm = np.asarray(pcm, np.float32).reshape(-1)
        self.output_level = float(np.sqrt(np.mean(np.square(pcm)))) if pcm.size else 0.0
        speed = CATCHUP_SPEED if self.jitter.catchup else 1.0
        self._resample_out.speed = speed
        if speed != 1.0:
            self.jitter.note_catchup()
        for block in self._chunk_out.push(self._resample_out(pcm)):
            self.jitter.push(block)

    # --- echo reference (model thread) --------------------------------------------------------
    def take_played(self) -> np.ndarray:
        """What the output callback played since the last call, at 24 kHz (empty if nothing)."""
        blocks = []
        while self._played:
            blocks.append(self._played.popleft())
        if not blocks:
            return np.zeros(0, np.float32)
        return self._resample_played(np.concatenate(blocks))

    def take_dropped_input(self) -> np.ndarray:
        """Silence as long as the microphone audio dropped (lag bound) since the last call: the
        echo canceller processes it so its microphone stream stays aligned with the played one."""
        n = self._counts.dropped_input - self._dropped_taken
        self._dropped_taken += n
        return np.zeros(round(n * self._in_block * SAMPLE_RATE / self.input_rate), np.float32)

    def echo_delay_ms(self) -> float | None:
        """PortAudio's offset between the played and the recorded streams (DAC time of the first
        played sample - ADC time of the first recorded one; negative when output started first),
        or None before both streams ran or when the host API gives no timing."""
        if not self._t_in0 or not self._t_out0:
            return None
        return 1000.0 * (self._t_out0 - self._t_in0)
