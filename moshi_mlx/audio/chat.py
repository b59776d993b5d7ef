"""The live chat session: sound card <-> Conversation on a model thread, UI on the main thread.

Threads:
- PortAudio's callback threads (inside `LiveAudio`): move 80 ms blocks through queues only.
- the model thread: loads the model (MLX streams belong to the thread that made them), runs
  warm-up frames, opens the sound card, then loops `read_frame -> Conversation.step -> write_frame`,
  feeding the session recorder and posting events for the UI.
- the main thread: draws the UI, watches `--duration`, receives Ctrl-C; it only reads counters.

Ending: `--duration` or Ctrl-C sets a stop flag; the model thread finishes its frame, closes the
streams, and the main thread writes the transcript and recording that were asked for.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..conversation import AudioFrame, FrameTiming
from ..hub import ModelFiles
from ..ui.terminal import BaseUI, Status
from .live import LiveAudio, check_devices
from .pipeline import Settings, load_model
from .session import SessionRecorder, percentile

log = logging.getLogger(__name__)

ECHO_WARNING = ("Use headphones: with laptop speakers Moshi hears itself (there is no echo "
                "cancellation) and the conversation degrades.")
NO_INPUT_TIMEOUT_S = 10.0


@dataclass
class ChatOptions:
    input_device: str | int | None = None
    output_device: str | int | None = None
    duration: float | None = None
    transcript: Path | None = None
    record: Path | None = None
    warmup_frames: int = 4
    jitter_frames: int = 1


class _ModelThread(threading.Thread):
    def __init__(self, files: ModelFiles, settings: Settings, opts: ChatOptions) -> None:
        super().__init__(name="moshi-model", daemon=True)
        self.files, self.settings, self.opts = files, settings, opts
        self.stop_flag = threading.Event()
        self.started_audio = threading.Event()
        self.events: queue.Queue[list[Any]] = queue.Queue()
        self.recorder = SessionRecorder(keep_audio=opts.record is not None)
        self.recent_ms: deque[float] = deque(maxlen=125)  # last 10 s of frame times
        self.slow_frames = 0
        self.audio: LiveAudio | None = None
        self.model: Any = None
        self.error: BaseException | None = None
        self.t_start = 0.0

    def run(self) -> None:
        try:
            self.model = load_model(self.files, self.settings)
            conv = self.model.conversation()
            conv.warmup(self.opts.warmup_frames)  # compile kernels before the first real frame
            if self.stop_flag.is_set():
                return
            self.audio = LiveAudio(self.opts.input_device, self.opts.output_device,
                                   jitter_frames=self.opts.jitter_frames)
            self.audio.start()
            self.started_audio.set()
            self._loop(conv, self.audio)
        except BaseException as e:  # reported by the main thread
            self.error = e
        finally:
            if self.audio is not None:
                self.audio.stop()

    def _loop(self, conv: Any, audio: LiveAudio) -> None:
        waited = 0.0
        while not self.stop_flag.is_set():
            frame = audio.read_frame(timeout=0.2)
            if frame is None:
                waited += 0.2
                if waited >= NO_INPUT_TIMEOUT_S:
                    raise RuntimeError(f"the input device delivered no audio for {waited:.0f} s")
                continue
            waited = 0.0
            if not self.t_start:  # the session clock starts with the first microphone frame
                self.t_start = time.monotonic()
            events = conv.step(frame)
            for ev in events:
                if isinstance(ev, AudioFrame):
                    audio.write_frame(ev.pcm)
                elif isinstance(ev, FrameTiming):
                    self.recent_ms.append(ev.total_ms)
                    self.slow_frames += ev.total_ms > 80.0
            self.recorder.add_user(frame)
            self.recorder.add(events)
            self.events.put(events)


def _status(t: _ModelThread, files: ModelFiles) -> Status:
    recent = list(t.recent_ms)
    a = t.audio
    return Status(
        model=files.name, precision=files.precision,
        p50_ms=percentile(recent, 50), p95_ms=percentile(recent, 95),
        lag_frames=a.lag_frames if a else 0,
        in_level=a.input_level if a else 0.0, out_level=a.output_level if a else 0.0,
        elapsed_s=time.monotonic() - t.t_start if t.t_start else 0.0,
        late_frames=a.stats.late_frames if a else 0, lost_frames=a.stats.lost_frames if a else 0,
    )


def run_chat(files: ModelFiles, settings: Settings, opts: ChatOptions, ui: BaseUI) -> dict[str, Any]:
    """Run one live session until `opts.duration`, Ctrl-C or an error; returns the stats."""
    check_devices(opts.input_device, opts.output_device)  # before a long model load
    ui.warn(ECHO_WARNING)
    ui.info(f"loading {files.name} {files.precision} from {files.source} ...")
    worker = _ModelThread(files, settings, opts)
    worker.start()
    interrupted = False
    try:
        while worker.is_alive() and not worker.started_audio.wait(0.1):
            pass
        if worker.started_audio.is_set():
            ui.info("listening: speak now" + (f" ({opts.duration:g} s)" if opts.duration else
                                               " (Ctrl-C to stop)"))
            with ui:
                last = 0.0
                while worker.is_alive():
                    try:
                        ui.on_events(worker.events.get(timeout=0.05))
                    except queue.Empty:
                        pass
                    now = time.monotonic()
                    if now - last >= 0.25:
                        ui.set_status(_status(worker, files))
                        last = now
                    if opts.duration and worker.t_start and now - worker.t_start >= opts.duration:
                        break
                while not worker.events.empty():
                    ui.on_events(worker.events.get_nowait())
                ui.set_status(_status(worker, files))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        worker.stop_flag.set()
        try:
            worker.join(timeout=30)
        except KeyboardInterrupt:  # a second Ctrl-C: give up waiting
            pass
    if worker.error is not None and not isinstance(worker.error, KeyboardInterrupt):
        raise worker.error
    return _save(worker, files, settings, opts, interrupted, ui)


def _save(worker: _ModelThread, files: ModelFiles, settings: Settings, opts: ChatOptions,
          interrupted: bool, ui: BaseUI) -> dict[str, Any]:
    a = worker.audio
    rec = worker.recorder
    stats = rec.stats(
        late_frames=a.stats.late_frames if a else 0, lost_frames=a.stats.lost_frames if a else 0,
        slow_frames=worker.slow_frames,
        input_frames=a.stats.input_frames if a else 0,
        output_frames=a.stats.output_frames if a else 0,
        input_overflows=a.stats.input_overflows if a else 0,
        output_underflows=a.stats.output_underflows if a else 0,
        input_rate=a.input_rate if a else None, output_rate=a.output_rate if a else None,
        interrupted=interrupted,
    )
    model_info = worker.model.describe() if worker.model is not None else {"name": files.name}
    sets = settings.to_dict() | {"input_device": opts.input_device,
                                 "output_device": opts.output_device, "duration": opts.duration}
    if opts.transcript:
        rec.write_transcript(opts.transcript, model=model_info, settings=sets,
                             seed=settings.seed, stats=stats)
        ui.info(f"transcript saved to {opts.transcript}")
    if opts.record:
        rec.write_recording(opts.record)
        ui.info(f"recording (user, Moshi) saved to {opts.record}")
    ui.info(f"{stats['frames']} frames, p50 {stats['frame_ms_p50']:.1f} ms, "
            f"p95 {stats['frame_ms_p95']:.1f} ms, late {stats['late_frames']}, "
            f"lost {stats['lost_frames']}")
    return stats

