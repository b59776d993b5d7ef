"""The microphone alone (no playback), as 24 kHz 80 ms frames, for live transcription.

Same device rules as `chat`: `--input-device` takes an index or a name; a device that refuses
24 kHz is opened at its default rate and resampled. The PortAudio callback only copies blocks;
`read_frame` resamples and re-cuts on the caller's thread. If the model falls behind by more than
`max_lag_frames`, the oldest blocks are dropped (and counted): live text beats complete audio.
"""

from __future__ import annotations

import logging
import queue
from typing import Any

import numpy as np

from ..audio.live import AudioDeviceError, FrameChunker, StreamResampler
from ..conversation import FRAME_SIZE, SAMPLE_RATE

log = logging.getLogger(__name__)



def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio library missing
        raise AudioDeviceError(f"PortAudio is not available ({e}); install libportaudio2") from None
    return sd


class Microphone:
    def __init__(self, device: str | int | None = None, max_lag_frames: int = 25) -> None:
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        self.device = device
        self.max_lag_frames = max_lag_frames
        self.rate = SAMPLE_RATE
        self.dropped = 0
        self._q: queue.Queue[np.ndarray] = queue.Queue()
        self._stream: Any = None
        self._resample = StreamResampler(SAMPLE_RATE, SAMPLE_RATE)
        self._chunk = FrameChunker(FRAME_SIZE)
        self._ready: list[np.ndarray] = []

    def _pick_rate(self, sd: Any) -> int:
        name = "the default input" if self.device is None else f"input device {self.device!r}"
        try:
            if not len(sd.query_devices()):
                raise AudioDeviceError("no sound devices found (is a sound card or audio server "
                                       "available?)")
            sd.check_input_settings(device=self.device, channels=1, dtype="float32",
                                    samplerate=SAMPLE_RATE)
            return SAMPLE_RATE
        except AudioDeviceError:
            raise
        except ValueError as e:
            if "sample" not in str(e).lower():
                raise AudioDeviceError(f"cannot use {name}: {e} (see --list-devices)") from None
        except Exception as e:  # sd.PortAudioError: no such device, no default device
            raise AudioDeviceError(f"cannot use {name}: {e} (see --list-devices)") from None
        try:
            return int(sd.query_devices(self.device, "input")["default_samplerate"])
        except Exception as e:
            raise AudioDeviceError(f"cannot use {name}: {e} (see --list-devices)") from None

    def check(self) -> int:
        """Fail early (before loading a model) if the device cannot be used; returns its rate."""
        return self._pick_rate(_sounddevice())

    def _on_input(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        self._q.put_nowait(indata[:, 0].copy())
        if self._q.qsize() > self.max_lag_frames:
            try:
                self._q.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass

    def start(self) -> None:
        sd = _sounddevice()
        self.rate = self._pick_rate(sd)
        self._resample = StreamResampler(self.rate, SAMPLE_RATE)
        try:
            self._stream = sd.InputStream(samplerate=self.rate, channels=1, dtype="float32",
                                          blocksize=round(FRAME_SIZE * self.rate / SAMPLE_RATE),
                                          device=self.device, callback=self._on_input)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as e:
            self.stop()
            raise AudioDeviceError(f"cannot open the microphone: {e}") from None

    def stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception as e:  # closing must never mask the real error
                log.debug("closing the input stream: %s", e)
            self._stream = None

    def __enter__(self) -> Microphone:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def read_frame(self, timeout: float = 0.5) -> np.ndarray | None:
        """Next 1920-sample frame at 24 kHz, or None if none arrived within `timeout`."""
        while not self._ready:
            try:
                block = self._q.get(timeout=timeout)
            except queue.Empty:
                return None
            self._ready = self._chunk.push(self._resample(block))
        return self._ready.pop(0)
